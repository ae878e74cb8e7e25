"""Every built page, as a visitor with assistive technology, a phone or a preference meets it:
axe-core finds no WCAG 2.1 AA violation (light and dark, before and after a result, in an error
state), nothing scrolls sideways at 360 px, every control is a 44 px target, the drop zone works
from the keyboard, the answer is announced, and reduced motion stops the motion."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from inference.manifest import discover
from tests.support.browser import axe_violations, drop_file, overflow_px, small_tap_targets
from tests.support.images import heldout_digit
from tests.support.paths import MODELS_DIR
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e
PAGES = ["/", *(f"/models/{m.name}/" for m in discover(MODELS_DIR))]


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("path", PAGES)
def test_every_page_has_no_wcag_21_aa_violation(
    browser: Browser, stack: Stack, path: str, scheme: str
) -> None:
    context = browser.new_context(color_scheme=scheme)
    page = context.new_page()
    page.goto(f"{stack.url}{path}")
    expect(page.locator("h1")).to_be_visible()

    assert axe_violations(page) == []
    context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_a_result_and_an_error_have_no_wcag_21_aa_violation(
    browser: Browser, stack: Stack, tmp_path: Path, scheme: str
) -> None:
    context = browser.new_context(color_scheme=scheme)
    page = context.new_page()
    image, label = heldout_digit()
    page.goto(f"{stack.url}/models/digits/")
    drop_file(page, "[data-testid=dropzone]", image, "image/png")
    expect(page.get_by_test_id("result-label")).to_have_text(label, timeout=30_000)
    expect(page.get_by_test_id("recent-item")).to_have_count(1)

    assert axe_violations(page) == []

    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    drop_file(page, "[data-testid=dropzone]", notes, "text/plain")
    expect(page.get_by_test_id("error")).to_be_visible()

    assert axe_violations(page) == []
    context.close()


@pytest.mark.parametrize("width", [360, 390])
@pytest.mark.parametrize("path", PAGES)
def test_on_a_phone_nothing_scrolls_sideways_and_every_control_is_a_44px_target(
    browser: Browser, stack: Stack, path: str, width: int
) -> None:
    context = browser.new_context(viewport={"width": width, "height": 800}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(f"{stack.url}{path}")
    expect(page.locator("h1")).to_be_visible()

    assert overflow_px(page) == 0
    assert small_tap_targets(page) == []
    context.close()


def test_after_a_result_the_phone_page_still_fits(browser: Browser, stack: Stack) -> None:
    context = browser.new_context(viewport={"width": 360, "height": 800}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(f"{stack.url}/models/defects/")
    page.get_by_test_id("example").first.click()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "succeeded", timeout=30_000)

    assert overflow_px(page) == 0
    assert small_tap_targets(page) == []
    context.close()


def test_the_drop_zone_works_from_the_keyboard_and_the_answer_is_announced(page: Page, stack: Stack) -> None:
    image, label = heldout_digit()
    page.on("filechooser", lambda chooser: chooser.set_files(str(image)))
    page.goto(f"{stack.url}/models/digits/")

    zone = page.get_by_test_id("dropzone")
    for _ in range(40):  # Tab from the top of the page until the drop zone has the focus
        page.keyboard.press("Tab")
        if zone.evaluate("el => el === document.activeElement"):
            break
    expect(zone).to_be_focused()
    page.keyboard.press("Space")

    status = page.get_by_role("status")
    expect(status).to_have_attribute("aria-live", "polite")
    expect(status).to_contain_text(f"Done: {label},", timeout=30_000)


def test_reduced_motion_stops_transitions_and_the_pulse(browser: Browser, stack: Stack) -> None:
    durations = {}
    for motion in ("no-preference", "reduce"):
        context = browser.new_context(reduced_motion=motion)
        page = context.new_page()
        page.goto(f"{stack.url}/")
        card = page.get_by_test_id("model-card").first
        durations[motion] = card.evaluate("el => parseFloat(getComputedStyle(el).transitionDuration)")
        page.goto(f"{stack.url}/models/digits/")
        scroll = page.evaluate("() => getComputedStyle(document.documentElement).scrollBehavior")
        durations[f"{motion}-scroll"] = scroll
        context.close()

    assert durations["no-preference"] > 0.1 and durations["reduce"] < 0.001
    assert (durations["no-preference-scroll"], durations["reduce-scroll"]) == ("smooth", "auto")


def test_dark_mode_follows_the_system(browser: Browser, stack: Stack) -> None:
    colours = {}
    for scheme in ("light", "dark"):
        context = browser.new_context(color_scheme=scheme)
        page = context.new_page()
        page.goto(f"{stack.url}/models/digits/")
        colours[scheme] = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
        context.close()

    assert colours == {"light": "rgb(248, 250, 252)", "dark": "rgb(11, 17, 32)"}

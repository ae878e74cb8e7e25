"""The page as the README shows it, and as it reads without JavaScript: the pictures come from
this run's own browser (MODELFOLIO_UPDATE_SCREENSHOT=1 writes them into docs/), and with
scripts off everything but the try-it widget is still there to read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.support.browser import overflow_px
from tests.support.images import heldout_digit
from tests.support.paths import REPO
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e
DOCS = REPO / "docs"


def picture_path(name: str, tmp_path: Path) -> str:
    # Refreshed on request only, so that a test run leaves the checkout clean.
    return str((DOCS if os.environ.get("MODELFOLIO_UPDATE_SCREENSHOT") else tmp_path) / name)


def test_on_a_phone_the_answer_shows_above_the_fold_of_the_result(
    browser: Browser, stack: Stack, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    image, label = heldout_digit()
    page.goto(f"{stack.url}/models/digits/")
    page.get_by_test_id("file-input").set_input_files(str(image))
    expect(page.get_by_test_id("result-label")).to_have_text(label, timeout=30_000)
    page.get_by_role("heading", name="Result", exact=True).scroll_into_view_if_needed()

    expect(page.get_by_test_id("result-label")).to_be_in_viewport()
    expect(page.get_by_text("The demo needs JavaScript")).to_be_hidden()
    assert overflow_px(page) == 0
    page.screenshot(path=picture_path("model-page-phone.png", tmp_path))
    context.close()


def test_in_dark_mode_the_index_and_a_result_read_light_on_dark(
    browser: Browser, stack: Stack, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="dark")
    page = context.new_page()
    page.goto(f"{stack.url}/")
    expect(page.get_by_test_id("card-art")).to_have_count(2)
    page.screenshot(path=picture_path("index-dark.png", tmp_path))

    page.goto(f"{stack.url}/models/defects/")
    page.get_by_test_id("example").nth(3).click()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "succeeded", timeout=30_000)
    label = page.get_by_test_id("result-label")
    colour = label.evaluate("el => getComputedStyle(el).color")
    assert colour == "rgb(241, 245, 249)"  # light ink on the dark surface
    page.get_by_test_id("tryit").scroll_into_view_if_needed()
    page.screenshot(path=picture_path("model-page-dark.png", tmp_path))
    context.close()


def test_without_javascript_everything_but_the_try_it_widget_reads(browser: Browser, stack: Stack) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(f"{stack.url}/models/digits/")

    expect(page.get_by_text("The demo needs JavaScript")).to_be_visible()
    answers = page.get_by_test_id("gallery-answer")
    expect(answers).to_have_count(4)
    expect(answers.first).to_contain_text("%")
    expect(page.get_by_test_id("card-figures")).to_contain_text("held-out images")
    expect(page.get_by_test_id("card-limitations")).to_be_visible()
    expect(page.get_by_test_id("card-history")).to_contain_text("serving now")
    expect(page.get_by_test_id("snippet-curl")).to_be_visible()
    # Controls that could do nothing without scripts are not offered.
    expect(page.get_by_test_id("example")).to_have_count(4)
    for control in ("example", "camera", "url-input"):
        expect(page.get_by_test_id(control).first).to_be_hidden()

    page.goto(f"{stack.url}/")
    expect(page.get_by_test_id("model-card")).to_have_count(2)
    context.close()

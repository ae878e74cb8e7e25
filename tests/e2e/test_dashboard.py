"""The owner dashboard in a real Chromium: the owner signs in with the admin token through the
form, sees the period's charts and tables, and axe-core finds no WCAG 2.1 AA violation on the
sign-in page or the dashboard; nothing scrolls sideways on a phone. The README's picture of it
comes from this run (MODELFOLIO_UPDATE_SCREENSHOT=1 writes docs/dashboard.png)."""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from proxy import Secrets
from proxy.storage import open_database
from tests.support.browser import axe_violations, overflow_px
from tests.support.dashboard import ADMIN_TOKEN, seed_history
from tests.support.inference import TOKEN
from tests.support.paths import REPO
from tests.support.proxy import FakeInference, proxy_in_front_of

pytestmark = pytest.mark.e2e


@pytest.fixture
def proxy_url(tmp_path: Path) -> Iterator[str]:
    database = open_database(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    seed_history(database, datetime.datetime.now(datetime.UTC).date())
    database.close()
    secrets = Secrets(inference_token=TOKEN, admin_token=ADMIN_TOKEN)
    with proxy_in_front_of(FakeInference().app(), tmp_path, secrets=secrets) as client:
        yield str(client.base_url).rstrip("/")


def sign_in(page: Page, url: str) -> None:
    page.goto(f"{url}/admin")
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("predictions-chart")).to_be_visible()


def test_the_owner_signs_in_and_sees_the_period_with_no_accessibility_violation(
    browser: Browser, proxy_url: str, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{proxy_url}/admin")
    expect(page.get_by_role("heading", name="Owner dashboard")).to_be_visible()
    assert axe_violations(page) == []
    page.get_by_label("Admin token").fill("wrong-token-wrong-token-wrong-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("error")).to_have_text("That is not the admin token.")
    assert axe_violations(page) == []

    sign_in(page, proxy_url)

    expect(page.get_by_test_id("revenue-chart")).to_be_visible()
    expect(page.get_by_test_id("models").get_by_role("row")).to_have_count(3)  # a header and two models
    expect(page.get_by_test_id("authors")).to_contain_text("acct_1AdaExample")
    expect(page.get_by_test_id("dead-letters")).to_have_text("1")
    assert page.locator("svg[data-testid=predictions-chart] rect").count() > 20
    assert ADMIN_TOKEN not in page.content()
    assert axe_violations(page) == []
    page.get_by_text("The numbers per day").click()
    assert axe_violations(page) == []
    target = REPO / "docs" if os.environ.get("MODELFOLIO_UPDATE_SCREENSHOT") else tmp_path
    page.get_by_text("The numbers per day").click()
    page.screenshot(path=str(target / "dashboard.png"), full_page=True)
    context.close()


def test_on_a_phone_the_dashboard_fits_and_a_new_period_is_a_form_away(
    browser: Browser, proxy_url: str
) -> None:
    context = browser.new_context(viewport={"width": 360, "height": 800}, is_mobile=True, has_touch=True)
    page = context.new_page()
    sign_in(page, proxy_url)
    assert overflow_px(page) == 0

    today = datetime.datetime.now(datetime.UTC).date()
    page.get_by_label("From", exact=True).fill((today - datetime.timedelta(days=2)).isoformat())
    page.get_by_label("To", exact=True).fill(today.isoformat())
    page.get_by_role("button", name="Show").click()

    expect(page.get_by_role("heading", level=2).first).to_have_text(
        f"{today - datetime.timedelta(days=2)} to {today} (UTC)"
    )
    assert overflow_px(page) == 0
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Admin token")).to_be_visible()
    context.close()

"""Results that last: the visitor's recent results stay in their browser with thumbnails until
they clear them, and "Copy link" gives a link that reopens a result: for its creator only, or
for anyone once the owner made the model's results public."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from proxy.app import create_app as create_proxy
from tests.support.images import heldout_digit
from tests.support.servers import serve
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e
ALICE = {"X-Forwarded-For": "203.0.113.5"}  # two visitors, told apart by their address
BOB = {"X-Forwarded-For": "198.51.100.7"}


def run_example(page: Page, index: int) -> str:
    page.get_by_test_id("example").nth(index).click()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "succeeded", timeout=30_000)
    return page.get_by_test_id("result-label").inner_text()


def test_recent_results_are_kept_with_thumbnails_reopen_and_clear(page: Page, stack: Stack) -> None:
    page.goto(f"{stack.url}/models/digits/")
    expect(page.get_by_test_id("recent")).to_be_hidden()
    first = run_example(page, 0)
    second = run_example(page, 1)

    page.reload()
    items = page.get_by_test_id("recent-item")
    expect(items).to_have_count(2)
    expect(items.first).to_contain_text(second)  # newest first
    assert (items.first.locator("img").get_attribute("src") or "").startswith("data:image/jpeg")
    items.nth(1).click()
    expect(page.get_by_test_id("result-label")).to_have_text(first)
    expect(page.get_by_test_id("shared-note")).to_contain_text("recent results in this browser")

    page.get_by_test_id("recent-clear").click()
    expect(page.get_by_test_id("recent")).to_be_hidden()
    page.reload()
    expect(page.get_by_test_id("recent")).to_be_hidden()


def test_copy_link_gives_a_link_that_reopens_the_result_in_a_fresh_browser(
    browser: Browser, stack: Stack
) -> None:
    context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.goto(f"{stack.url}/models/digits/")
    label = run_example(page, 2)
    page.get_by_test_id("copy-link").click()
    expect(page.get_by_test_id("copy-link")).to_have_text("Link copied")
    link = page.evaluate("() => navigator.clipboard.readText()")
    context.close()
    assert link.startswith(f"{stack.url}/models/digits/?result=")

    fresh = browser.new_context()  # nothing in its storage: the proxy answers for the creator
    reopened = fresh.new_page()
    reopened.goto(link)
    expect(reopened.get_by_test_id("result-label")).to_have_text(label, timeout=30_000)
    expect(reopened.get_by_test_id("shared-note")).to_contain_text("A shared result")
    expect(reopened.get_by_test_id("preview")).to_be_visible()
    fresh.close()


@pytest.fixture(params=[(), ("digits",)], ids=["private", "public"])
def visitors_proxy(
    request: pytest.FixtureRequest, stack: Stack, tmp_path: Path
) -> Iterator[tuple[str, bool]]:
    """The same site and models behind a proxy that tells visitors apart by X-Forwarded-For,
    with the digits' results private (the default) or made public by the owner."""
    config = dataclasses.replace(
        stack.config,
        trust_x_forwarded_for=True,
        public_results=request.param,
        ledger_path=tmp_path / "ledger.sqlite3",
    )
    with serve(create_proxy(config)) as url:
        yield url, bool(request.param)


def test_a_shared_link_opens_for_someone_else_only_where_the_owner_made_results_public(
    browser: Browser, visitors_proxy: tuple[str, bool]
) -> None:
    url, public = visitors_proxy
    alice = browser.new_context(extra_http_headers=ALICE)
    page = alice.new_page()
    page.goto(f"{url}/models/digits/")
    image, label = heldout_digit()
    page.get_by_test_id("file-input").set_input_files(str(image))
    expect(page.get_by_test_id("result-label")).to_have_text(label, timeout=30_000)
    link = page.url
    alice.close()

    bob = browser.new_context(extra_http_headers=BOB)
    theirs = bob.new_page()
    theirs.goto(link)
    if public:
        expect(theirs.get_by_test_id("result-label")).to_have_text(label, timeout=30_000)
    else:
        expect(theirs.get_by_test_id("error")).to_contain_text(
            "Only the person who made this result can open"
        )
        expect(theirs.get_by_test_id("result-label")).to_be_hidden()
        theirs.get_by_test_id("example").first.click()  # and the page still works for them
        expect(theirs.get_by_test_id("status")).to_have_attribute("data-state", "succeeded", timeout=30_000)
    bob.close()

"""A visitor drops a real handwritten digit on the model page, in a real Chromium, through the real
proxy and inference server: the right digit shows, one prediction is billed, and no secret is seen."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from playwright.sync_api import Page, Request, Response, expect

from tests.support.browser import drop_file
from tests.support.images import heldout_digit
from tests.support.inference import TOKEN
from tests.support.paths import REPO
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e
SCREENSHOT = REPO / "docs" / "model-page.png"


def billed_rows(ledger: Path) -> list[tuple]:
    with sqlite3.connect(ledger) as db:
        return db.execute("SELECT prediction_id, model, predict_time_ms, amount FROM billed_usage").fetchall()


def test_a_dropped_digit_shows_its_label_bills_one_prediction_and_leaks_no_secret(
    page: Page, stack: Stack, tmp_path: Path
) -> None:
    seen: list[str] = []

    def on_request(request: Request) -> None:
        seen.append(f"{request.method} {request.url} {request.all_headers()} {request.post_data or ''}")

    def on_response(response: Response) -> None:
        body = response.body() if response.status != 304 and not response.url.endswith(".png") else b""
        seen.append(
            f"{response.status} {response.url} {response.all_headers()} {body.decode('utf-8', 'replace')}"
        )

    page.on("request", on_request)
    page.on("response", on_response)
    image, label = heldout_digit()

    page.goto(f"{stack.url}/models/digits/")
    before = len(billed_rows(stack.ledger))
    with page.expect_response(lambda r: r.request.method == "POST" and "/predictions" in r.url) as created:
        drop_file(page, "[data-testid=dropzone]", image, "image/png")
    prediction_id = created.value.json()["id"]

    expect(page.get_by_test_id("result-label")).to_have_text(label, timeout=30_000)
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "succeeded")
    expect(page.get_by_test_id("result-confidence")).to_contain_text("%")
    rows = billed_rows(stack.ledger)
    assert len(rows) == before + 1  # however many times the page polled
    mine = [r for r in rows if r[0] == prediction_id]
    assert len(mine) == 1 and mine[0][1] == "modelfolio/digits"

    # The README's picture: refreshed on request, so a test run leaves the checkout clean.
    update = os.environ.get("MODELFOLIO_UPDATE_SCREENSHOT")
    page.set_viewport_size({"width": 1280, "height": 1000})
    page.get_by_test_id("tryit").scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOT if update else tmp_path / "model-page.png"))

    assert any("/v1/predictions/" in s for s in seen)  # the capture really saw the API traffic
    leaks = [s[:120] for s in seen if TOKEN in s]
    assert leaks == []


def test_the_built_site_holds_no_secret(stack: Stack) -> None:
    files = [p for p in stack.dist.rglob("*") if p.is_file()]
    assert any(p.suffix == ".js" for p in files)
    for path in files:
        assert TOKEN.encode() not in path.read_bytes(), path


def test_a_file_that_is_not_an_image_gets_a_readable_error(page: Page, stack: Stack, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    page.goto(f"{stack.url}/models/digits/")
    drop_file(page, "[data-testid=dropzone]", notes, "text/plain")
    expect(page.get_by_test_id("error")).to_be_visible()
    expect(page.get_by_test_id("error")).to_contain_text("image")


def test_a_picked_file_from_the_keyboard_runs_too(page: Page, stack: Stack) -> None:
    image, label = heldout_digit()
    page.on("filechooser", lambda chooser: chooser.set_files(str(image)))
    page.goto(f"{stack.url}/models/digits/")
    page.get_by_test_id("dropzone").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("result-label")).to_have_text(label, timeout=30_000)

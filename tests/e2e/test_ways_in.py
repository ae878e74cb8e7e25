"""Every way a visitor can hand the model a picture, in a real Chromium through the real proxy
and model server: a paste, an image URL that the browser fetches, the camera. Each failure says
what went wrong on the page, and the page keeps working after it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from tests.support.browser import axe_violations, put_on_clipboard
from tests.support.images import heldout_digit
from tests.support.proxy import closed_port_url
from tests.support.servers import serve
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e
CORS = {"Access-Control-Allow-Origin": "*"}


@pytest.fixture(scope="module")
def image_host() -> Iterator[str]:
    """Another website on loopback that serves a handwritten digit, a page and a missing file."""
    image, _ = heldout_digit()

    async def digit(request: Request) -> Response:
        return Response(image.read_bytes(), media_type="image/png", headers=CORS)

    async def page(request: Request) -> Response:
        return HTMLResponse("<h1>Not a picture</h1>", headers=CORS)

    async def missing(request: Request) -> Response:
        return Response("gone", status_code=404, headers=CORS)

    app = Starlette(
        routes=[Route("/digit.png", digit), Route("/page.html", page), Route("/gone.png", missing)]
    )
    with serve(app) as url:
        yield url


@pytest.fixture
def clipboard_page(browser: Browser, stack: Stack) -> Iterator[Page]:
    context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.goto(f"{stack.url}/models/digits/")
    yield page
    context.close()


def load_url(page: Page, url: str) -> None:
    page.get_by_label("Image URL").fill(url)
    page.get_by_test_id("url-load").click()


def test_a_pasted_image_runs(clipboard_page: Page) -> None:
    image, label = heldout_digit()
    put_on_clipboard(clipboard_page, image.read_bytes(), "image/png")

    clipboard_page.keyboard.press("ControlOrMeta+V")

    expect(clipboard_page.get_by_test_id("result-label")).to_have_text(label, timeout=30_000)


def test_pasted_text_is_refused_clearly_and_an_image_pasted_next_still_runs(clipboard_page: Page) -> None:
    put_on_clipboard(clipboard_page, "just some words", "text/plain")
    clipboard_page.keyboard.press("ControlOrMeta+V")

    expect(clipboard_page.get_by_test_id("error")).to_contain_text("The clipboard holds text, not an image")

    image, label = heldout_digit()
    put_on_clipboard(clipboard_page, image.read_bytes(), "image/png")
    clipboard_page.keyboard.press("ControlOrMeta+V")
    expect(clipboard_page.get_by_test_id("result-label")).to_have_text(label, timeout=30_000)
    expect(clipboard_page.get_by_test_id("error")).to_be_hidden()


def test_a_pasted_file_that_is_not_an_image_is_refused_clearly(page: Page, stack: Stack) -> None:
    page.goto(f"{stack.url}/models/digits/")
    # Chromium's clipboard carries only images and text, so the pasted PDF arrives as a paste
    # event holding a file, as a desktop's file manager sends it.
    page.evaluate(
        """() => {
            const data = new DataTransfer();
            data.items.add(new File(["%PDF-1.4"], "invoice.pdf", {type: "application/pdf"}));
            document.body.dispatchEvent(new ClipboardEvent("paste", {clipboardData: data, bubbles: true}));
        }"""
    )

    expect(page.get_by_test_id("error")).to_contain_text("Not an image")
    expect(page.get_by_test_id("error")).to_contain_text("invoice.pdf")


def test_an_image_url_is_fetched_by_the_browser_and_runs(page: Page, stack: Stack, image_host: str) -> None:
    _, label = heldout_digit()
    page.goto(f"{stack.url}/models/digits/")
    with page.expect_request(f"{image_host}/digit.png") as fetched:
        load_url(page, f"{image_host}/digit.png")

    expect(page.get_by_test_id("result-label")).to_have_text(label, timeout=30_000)
    sent = page.get_by_test_id("preview-info")
    expect(sent).to_contain_text("digit.png")
    assert fetched.value.frame.url.startswith(stack.url)  # the visitor's browser asked, not the server


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("closed", "did not answer, or it does not let other websites read its images"),
        ("/page.html", "holds a text/html document, not an image"),
        ("/gone.png", "answered HTTP 404"),
    ],
)
def test_a_url_that_does_not_answer_or_is_not_an_image_says_so_and_the_page_keeps_working(
    page: Page, stack: Stack, image_host: str, where: str, message: str
) -> None:
    _, label = heldout_digit()
    page.goto(f"{stack.url}/models/digits/")

    load_url(page, f"{closed_port_url()}/digit.png" if where == "closed" else f"{image_host}{where}")

    expect(page.get_by_test_id("error")).to_contain_text(message)
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "failed")
    load_url(page, f"{image_host}/digit.png")
    expect(page.get_by_test_id("result-label")).to_have_text(label, timeout=30_000)


def camera_page(browser: Browser, stack: Stack, permissions: list[str]) -> tuple[BrowserContext, Page]:
    context = browser.new_context(permissions=permissions)
    page = context.new_page()
    page.goto(f"{stack.url}/models/digits/")
    return context, page


def test_a_refused_camera_says_how_to_allow_it_and_a_chosen_file_still_runs(
    browser: Browser, stack: Stack
) -> None:
    context, page = camera_page(browser, stack, permissions=[])
    image, label = heldout_digit()

    page.get_by_test_id("camera").click()

    expect(page.get_by_test_id("error")).to_contain_text("Camera not allowed")
    expect(page.get_by_test_id("error")).to_contain_text("Allow the camera for this site")
    expect(page.get_by_test_id("camera-panel")).to_be_hidden()
    page.get_by_test_id("file-input").set_input_files(str(image))
    expect(page.get_by_test_id("result-label")).to_have_text(label, timeout=30_000)
    context.close()


def test_a_photo_from_the_camera_runs(browser: Browser, stack: Stack) -> None:
    context, page = camera_page(browser, stack, permissions=["camera"])

    page.get_by_test_id("camera").click()
    expect(page.get_by_test_id("camera-panel")).to_be_visible()
    expect(page.get_by_test_id("camera-shoot")).to_be_focused()
    assert axe_violations(page) == []
    page.get_by_test_id("camera-shoot").click()

    expect(page.get_by_test_id("camera-panel")).to_be_hidden()
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "succeeded", timeout=30_000)
    expect(page.get_by_test_id("preview-info")).to_contain_text("photo.jpg")
    context.close()


def test_the_camera_input_also_offers_the_phones_own_camera_app(page: Page, stack: Stack) -> None:
    page.goto(f"{stack.url}/models/digits/")

    capture = page.get_by_test_id("capture-input")
    assert capture.get_attribute("capture") == "environment" and capture.get_attribute("accept") == "image/*"

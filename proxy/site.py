"""The built portfolio (`python build.py` writes it to SITE_DIR), served as static files with
security headers, and a page that says what to do while it has not been built."""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from proxy.config import BillingConfig

STRIPE_API = "https://api.stripe.com"
STRIPE_CHECKOUT = "https://checkout.stripe.com"


def checkout_origin(billing: BillingConfig) -> str:
    """Where "Get an API key" sends the buyer: Stripe's hosted Checkout, or, when the billing base
    points elsewhere (the test Stripe on loopback), that server, which hosts its own page."""
    parts = urlsplit(billing.stripe_api_base)
    origin = f"{parts.scheme}://{parts.netloc}"
    return STRIPE_CHECKOUT if origin == STRIPE_API else origin


def security_headers(form_action: str = "", *, plain_http: bool = False) -> dict[str, str]:
    # The site loads its scripts from /assets/*.js: no inline script may run. Inline styles stay
    # allowed because templates may set a style attribute; they cannot run code. Browsers apply
    # form-action to the redirect that follows a form post too, so the pages whose form starts a
    # checkout allow the checkout's origin.
    # connect-src: a visitor may give an image's URL, which their browser fetches (the server
    # never fetches a caller's URL), so any https origin; plain http too only where the site
    # itself is served over http (`plain_http`, local use), as an https page may not load it.
    # The camera is this origin's only: the try-it widget takes a photo with it.
    form_sources = f"'self' {form_action}".strip()
    connect_sources = "'self' https:" + (" http:" if plain_http else "")
    policy = (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        f"img-src 'self' data: blob:; font-src 'self'; connect-src {connect_sources}; "
        "object-src 'none'; "
        f"base-uri 'self'; form-action {form_sources}; frame-ancestors 'none'"
    )
    return {
        "content-security-policy": policy,
        "x-content-type-options": "nosniff",
        "referrer-policy": "strict-origin-when-cross-origin",
        "x-frame-options": "DENY",
        "permissions-policy": "camera=(self), microphone=(), geolocation=()",
    }


SECURITY_HEADERS = security_headers()

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>{head}
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main><h1>{title}</h1><p>{message}</p></main></body></html>
"""


def page(status: int, title: str, message: str, *, head: str = "") -> HTMLResponse:
    body = _PAGE.format(title=html.escape(title), message=message, head=head)
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


def not_built(site_dir: Path) -> HTMLResponse:
    return page(
        503,
        "The site has not been built yet",
        f"There is no built site in <code>{html.escape(site_dir.name)}/</code>. Run "
        "<code>python build.py</code> in the repository, then reload this page. "
        "The API under <code>/v1/</code> works meanwhile.",
    )


class Site:
    def __init__(self, directory: Path, *, form_action: str = "", plain_http: bool = False) -> None:
        """`form_action`: the one other origin a form may lead to (Stripe Checkout), or none.
        `plain_http`: the site is served over http, so image URLs may be http too."""
        self.directory = directory
        self._files: StaticFiles | None = None
        headers = security_headers(form_action, plain_http=plain_http)
        self._headers = [(k.encode(), v.encode()) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.directory.is_dir():
            await not_built(self.directory)(scope, receive, send)
            return
        if self._files is None:
            self._files = StaticFiles(directory=self.directory, html=True)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self._headers]
            await send(message)

        try:
            await self._files(scope, receive, send_with_headers)
        except HTTPException as error:
            if error.status_code == 404:
                response = page(404, "Not found", 'There is no page here. <a href="/">See all models</a>.')
            else:
                response = page(error.status_code, "Not allowed", "This address serves pages only.")
            if error.headers:
                response.headers.update(error.headers)
            await response(scope, receive, send)

"""The built portfolio (`python build.py` writes it to SITE_DIR), served as static files with
security headers, and a page that says what to do while it has not been built."""

from __future__ import annotations

import html
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

# The site loads its scripts from /assets/*.js: no inline script may run. Inline styles stay
# allowed because templates may set a style attribute; they cannot run code. Browsers apply
# form-action to the redirect that follows a form post too: "Get an API key" ends at Stripe Checkout.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self'; connect-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self' https://checkout.stripe.com; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "strict-origin-when-cross-origin",
    "x-frame-options": "DENY",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}

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
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._files: StaticFiles | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.directory.is_dir():
            await not_built(self.directory)(scope, receive, send)
            return
        if self._files is None:
            self._files = StaticFiles(directory=self.directory, html=True)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    *((k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()),
                ]
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

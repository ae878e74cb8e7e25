"""Who may see the owner dashboard: the holder of ADMIN_TOKEN.

A person signs in once with the token in a form; the answer sets a session cookie that holds not
the token but an expiry and an HMAC of it under a key derived from the token, so the token never
travels again and is never in a page, a log or the browser's storage. The cookie is HttpOnly (no
script can read it), SameSite=Strict (no other site's page can make the browser send it, so no
cross-site request can act as the owner), scoped to /admin, Secure where the site is served over
https, and lasts eight hours; changing ADMIN_TOKEN ends every session. A bearer header
(`Authorization: Bearer <ADMIN_TOKEN>`) works too, for scripts: a browser cannot add one to a
page navigation without JavaScript, which the dashboard does not use.

Why not HTTP Basic auth: the browser would keep the token itself and send it with every request,
with no way to sign out. Why not the token in a URL: it would land in history, logs and Referer.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "mf_admin"
PATH = "/admin"
LIFETIME_S = 8 * 3600
_VERSION = "v1"


class Sessions:
    def __init__(self, admin_token: str, *, secure: bool) -> None:
        self._token = admin_token.encode()
        self._key = hmac.new(self._token, b"modelfolio owner dashboard session", hashlib.sha256).digest()
        self._secure = secure

    def is_token(self, presented: str) -> bool:
        return hmac.compare_digest(presented.encode(), self._token)

    def signed_in(self, request: Request, now: float | None = None) -> bool:
        scheme, _, presented = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and presented and self.is_token(presented.strip()):
            return True
        version, _, rest = (request.cookies.get(COOKIE) or "").partition(".")
        expires, _, mac = rest.partition(".")
        if version != _VERSION or not expires.isdigit():
            return False
        if not hmac.compare_digest(mac, self._mac(expires)):
            return False
        return int(expires) > (time.time() if now is None else now)

    def sign_in(self, response: Response, now: float | None = None) -> None:
        expires = str(int((time.time() if now is None else now) + LIFETIME_S))
        response.set_cookie(
            COOKIE,
            f"{_VERSION}.{expires}.{self._mac(expires)}",
            max_age=LIFETIME_S,
            path=PATH,
            secure=self._secure,
            httponly=True,
            samesite="strict",
        )

    def sign_out(self, response: Response) -> None:
        response.delete_cookie(COOKIE, path=PATH, secure=self._secure, httponly=True, samesite="strict")

    def _mac(self, expires: str) -> str:
        return hmac.new(self._key, f"{_VERSION}.{expires}".encode(), hashlib.sha256).hexdigest()

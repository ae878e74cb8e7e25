"""One JSON line per request and per billing event, on the `modelfolio.proxy` logger.

Lines are built from named fields only (never from headers, bodies or settings), so no key,
token or client address can reach them.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("modelfolio.proxy")
_SCOPE_KEY = "modelfolio.log"


def log_event(event: str, *, level: int = logging.INFO, **fields: Any) -> None:
    if not logger.isEnabledFor(level):
        return
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
    line = {"ts": now, "event": event, **fields}
    logger.log(level, json.dumps(line, default=str, separators=(",", ":")))


def annotate(scope: Scope, **fields: Any) -> None:
    """Adds fields to this request's log line (caller kind, prediction id)."""
    scope.setdefault(_SCOPE_KEY, {}).update(fields)


def configure(stream: Any = None) -> None:
    """For `python -m proxy`: the JSON lines, bare, on stderr."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


class AccessLog:
    """One log line per request; `observe(route, method, status, seconds)` also sees each (the
    route as its template, `/v1/predictions/{id}`, so that metrics keep few label values)."""

    def __init__(self, app: ASGIApp, observe: Callable[[str, str, int, float], None] | None = None) -> None:
        self.app = app
        self._observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method, path = scope["method"], scope["path"]
        status = 500
        fields: dict[str, Any] = scope.setdefault(_SCOPE_KEY, {})

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            seconds = time.perf_counter() - started
            log_event(
                "request", method=method, path=path, status=status, ms=round(seconds * 1000, 1), **fields
            )
            if self._observe is not None:
                route = scope.get("route")
                template = getattr(route, "path", None) or ("/v1/*" if path.startswith("/v1/") else "site")
                self._observe(template, method, status, seconds)

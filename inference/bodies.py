"""Reading request bodies and headers with limits: what every create route needs first."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request

from inference.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType


async def read_json(request: Request, max_bytes: int) -> Any:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaType(
            f"send the body as application/json, not {content_type or 'no content type'}"
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(_too_large(int(declared), max_bytes))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise PayloadTooLarge(_too_large(None, max_bytes))
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None


def wait_seconds(prefer: str | None, max_wait: float) -> float:
    """`Prefer: wait` → the longest wait; `wait=N` → N seconds, capped; absent → 0."""
    for part in (prefer or "").split(","):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "wait":
            if not value:
                return max_wait
            try:
                return max(0.0, min(float(value), max_wait))
            except ValueError:
                raise BadRequest(f"Prefer: wait={value} is not a number of seconds") from None
    return 0.0


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def cancel_after_seconds(header: str | None) -> float | None:
    """`Cancel-After: 30s` (or 500ms, 5m, 1h, a bare number of seconds) → seconds; absent → None."""
    if header is None:
        return None
    match = _DURATION.fullmatch(header)
    if match is None or float(match.group(1)) <= 0:
        raise BadRequest(f"Cancel-After: {header!r} is not a duration like 30s, 500ms or 5m")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _too_large(size: int | None, limit: int) -> str:
    got = f"{size / 1e6:.1f} MB" if size is not None else "more than that"
    return f"the body is {got}; the limit is {limit / 1e6:.0f} MB. Downscale the image first."

"""Checks every create makes before anything is forwarded, and reading a body under its limit."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import ClientDisconnect, Request

from proxy.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from proxy.forward import body_too_large, limited


def check_json_content_type(content_type: str | None) -> None:
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        sent = f"'{content_type}'" if content_type else "no Content-Type"
        raise UnsupportedMediaType(
            f"a prediction is created with Content-Type: application/json; this request sent {sent}"
        )


def check_declared_length(content_length: str | None, limit: int) -> None:
    if content_length is None:
        return
    if not content_length.strip().isdigit():
        raise BadRequest("Content-Length must be a whole number of bytes")
    if int(content_length) > limit:
        raise PayloadTooLarge(body_too_large(limit))


async def read_create_body(request: Request, limit: int) -> dict[str, Any]:
    """The whole body of a create, parsed, for the creates the proxy must read (an Idempotency-Key
    to compare, a result cache to key): the rest stream through unread."""
    try:
        raw = b"".join([chunk async for chunk in limited(request.stream(), limit)])
    except ClientDisconnect:
        raise BadRequest("the request body ended before it was complete") from None
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
        raise BadRequest('the body must be a JSON object with an "input" object, e.g. {"input": {...}}')
    return body

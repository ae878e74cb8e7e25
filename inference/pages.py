"""Replicate's list pages: `{"next": url|null, "previous": url|null, "results": [...]}`, newest
first, with opaque cursors that the official clients follow as given.

A cursor names the (created_at, id) it continues from and which way; it is base64 of JSON, so
a caller cannot mistake it for a page number, and one this server did not issue is refused with
a 400 rather than answered with a wrong page.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import urlencode

from starlette.requests import Request

from inference.errors import BadRequest

MAX_LIMIT = 100  # Replicate's page size, and the most one page may hold here
T = TypeVar("T")
Key = tuple[str, str]  # (created_at in ISO 8601 UTC, id): sorts as the items were created


@dataclass(frozen=True)
class Cursor:
    direction: Literal["older", "newer"]
    key: Key


def encode(cursor: Cursor) -> str:
    raw = json.dumps([cursor.direction, *cursor.key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(value: str) -> Cursor:
    refused = BadRequest(
        "the cursor is not one this server issued; follow the 'next' or 'previous' URL of a page as given"
    )
    try:
        raw = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (binascii.Error, ValueError):
        raise refused from None
    if (
        not isinstance(raw, list)
        or len(raw) != 3
        or raw[0] not in ("older", "newer")
        or not all(isinstance(part, str) for part in raw[1:])
    ):
        raise refused
    return Cursor(raw[0], (raw[1], raw[2]))


def read_query(request: Request) -> tuple[Cursor | None, int]:
    """The page asked for: its cursor (None: the newest) and how many it may hold."""
    unknown = sorted(set(request.query_params) - {"cursor", "limit"})
    if unknown:
        raise BadRequest(f"unknown query parameter {unknown[0]!r}; a list takes 'cursor' and 'limit'")
    raw_limit = request.query_params.get("limit", str(MAX_LIMIT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise BadRequest(f"'limit' must be a whole number from 1 to {MAX_LIMIT}, got {raw_limit!r}")
    cursor = request.query_params.get("cursor")
    return (decode(cursor) if cursor is not None else None), int(raw_limit)


def page(
    request: Request, items: Sequence[T], key: Callable[[T], Key], render: Callable[[T], Any]
) -> dict[str, Any]:
    """One page of `items` (any order) for this request, newest first, with its neighbours' URLs."""
    cursor, limit = read_query(request)
    ordered = sorted(items, key=key, reverse=True)
    if cursor is None:
        chosen = ordered[:limit]
    elif cursor.direction == "older":
        chosen = [item for item in ordered if key(item) < cursor.key][:limit]
    else:
        chosen = [item for item in ordered if key(item) > cursor.key][-limit:]
    newest, oldest = (key(chosen[0]), key(chosen[-1])) if chosen else (None, None)
    has_older = oldest is not None and any(key(item) < oldest for item in ordered)
    has_newer = newest is not None and any(key(item) > newest for item in ordered)
    return {
        "next": _url(request, Cursor("older", oldest), limit) if has_older and oldest else None,
        "previous": _url(request, Cursor("newer", newest), limit) if has_newer and newest else None,
        "results": [render(item) for item in chosen],
    }


def _url(request: Request, cursor: Cursor, limit: int) -> str:
    query = {"cursor": encode(cursor)}
    if limit != MAX_LIMIT:
        query["limit"] = str(limit)
    return f"{str(request.base_url).rstrip('/')}{request.url.path}?{urlencode(query)}"

"""Replicate's list pages as the proxy answers them: `{"next", "previous", "results"}`, newest
first, 100 a page unless `limit` asks for fewer. A cursor is base64 of JSON naming the
(created_at, id) it continues from and which way, opaque to callers; the official clients follow
`next` and `previous` as given. One the proxy did not issue is a 400, never a wrong page."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request

from proxy.errors import BadRequest
from proxy.ledger import Page, PageKey

MAX_LIMIT = 100


@dataclass(frozen=True)
class Cursor:
    newer: bool  # True: the page before (newer items), for a `previous` link
    key: PageKey


def encode(cursor: Cursor) -> str:
    raw = json.dumps(["newer" if cursor.newer else "older", *cursor.key], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(value: str) -> Cursor:
    refused = BadRequest(
        "the cursor is not one this API issued; follow the 'next' or 'previous' URL of a page as given"
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
    return Cursor(raw[0] == "newer", (raw[1], raw[2]))


def read_query(request: Request) -> tuple[Cursor | None, int]:
    """The page asked for: its cursor (None: the newest) and how many results it may hold."""
    unknown = sorted(set(request.query_params) - {"cursor", "limit"})
    if unknown:
        raise BadRequest(f"unknown query parameter {unknown[0]!r}; a list takes 'cursor' and 'limit'")
    raw_limit = request.query_params.get("limit", str(MAX_LIMIT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise BadRequest(f"'limit' must be a whole number from 1 to {MAX_LIMIT}, got {raw_limit!r}")
    cursor = request.query_params.get("cursor")
    return (decode(cursor) if cursor is not None else None), int(raw_limit)


def forwarded_query(request: Request) -> str:
    """The list query, checked here and rebuilt, for the model server (which pages its own)."""
    _, limit = read_query(request)
    query = {}
    if "cursor" in request.query_params:
        query["cursor"] = request.query_params["cursor"]
    if "limit" in request.query_params:
        query["limit"] = str(limit)
    return f"?{urlencode(query)}" if query else ""


def page_json(
    request: Request,
    page: Page,
    limit: int,
    results: list[Any],
    key_of: Callable[[tuple[Any, ...]], PageKey],
) -> dict[str, Any]:
    """The page's JSON; `key_of(row)` gives a ledger row's (created_at, id)."""
    newest, oldest = (key_of(page.rows[0]), key_of(page.rows[-1])) if page.rows else (None, None)
    return {
        "next": _url(request, Cursor(False, oldest), limit) if page.has_older and oldest else None,
        "previous": _url(request, Cursor(True, newest), limit) if page.has_newer and newest else None,
        "results": results,
    }


def _url(request: Request, cursor: Cursor, limit: int) -> str:
    query = {"cursor": encode(cursor)}
    if limit != MAX_LIMIT:
        query["limit"] = str(limit)
    return f"{str(request.base_url).rstrip('/')}{request.url.path}?{urlencode(query)}"

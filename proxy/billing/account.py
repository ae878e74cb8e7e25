"""What a customer does with its own key, over the API:

    PUT  /v1/usage/cap      {"scope": "key" | "customer", "monthly": "25.00" | null}
                            its own monthly spend cap (null removes it; the owner's stays)
    POST /v1/keys/rotate    {"grace_period_s": 86400}
                            a new key, shown once; the presented one keeps working for the grace
                            period (0 to 7 days, default 1), so clients can move without a gap

`GET /v1/usage` shows the caps, what was spent this month and what is left.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from proxy.auth import Caller, hash_key, new_api_key
from proxy.billing import billing_of, caps
from proxy.errors import BadRequest, Unauthorized, UnsupportedMediaType
from proxy.forward import limited
from proxy.logs import log_event

MAX_BODY_BYTES = 4096
DEFAULT_GRACE_S = 86400
MAX_GRACE_S = 7 * 86400


async def set_cap(request: Request) -> Response:
    billing = billing_of(request)
    caller = _customer(await billing.identify(request))
    body = await _json_object(request, required=True)
    _only(body, {"scope", "monthly"})
    scope = body.get("scope", "key")
    if scope not in ("key", "customer"):
        raise BadRequest('"scope" must be "key" (this API key) or "customer" (all of your keys)')
    if "monthly" not in body:
        raise BadRequest('"monthly" is required: an amount in USD like "25.00", or null to remove your cap')
    subject = caller.key_id if scope == "key" else caller.customer
    assert subject is not None
    if body["monthly"] is None:
        await to_thread.run_sync(billing.caps.clear, scope, subject, "customer")
    else:
        try:
            monthly = caps.parse_cap(body["monthly"])
        except ValueError as error:
            raise BadRequest(f'"monthly" {str(error).removeprefix("monthly ")}') from None
        await to_thread.run_sync(billing.caps.set, scope, subject, "customer", monthly, billing.now())
    log_event("spend_cap_set", scope=scope, set_by="customer", monthly=body["monthly"], key_id=caller.key_id)
    usage = await billing.usage(caller)
    return JSONResponse({"spend_caps": usage["spend_caps"]}, headers={"cache-control": "no-store"})


async def rotate_key(request: Request) -> Response:
    billing = billing_of(request)
    caller = _customer(await billing.identify(request))
    body = await _json_object(request, required=False)
    _only(body, {"grace_period_s"})
    grace = body.get("grace_period_s", DEFAULT_GRACE_S)
    if isinstance(grace, bool) or not isinstance(grace, int) or not 0 <= grace <= MAX_GRACE_S:
        raise BadRequest(
            f'"grace_period_s" must be a whole number of seconds from 0 to {MAX_GRACE_S} (7 days)'
        )
    now = billing.clock()
    expires = (now + datetime.timedelta(seconds=grace)).isoformat(timespec="microseconds")
    key_id, key = new_api_key()
    assert caller.key_id is not None
    if not await to_thread.run_sync(
        billing.ledger.rotate_api_key, caller.key_id, key_id, hash_key(key), billing.now(), expires
    ):
        raise Unauthorized("this API key can no longer be rotated")
    log_event("api_key_issued", key_id=key_id, via="rotation", replaces=caller.key_id, grace_period_s=grace)
    return JSONResponse(
        {"id": key_id, "key": key, "previous_key": caller.key_id, "previous_key_expires_at": expires},
        status_code=201,
        headers={"cache-control": "no-store"},
    )


def _customer(caller: Caller) -> Caller:
    if caller.customer is None or caller.key_id is None:
        raise Unauthorized("this needs your API key: send 'Authorization: Bearer <key>'")
    return caller


async def _json_object(request: Request, *, required: bool) -> dict[str, Any]:
    raw = b"".join([chunk async for chunk in limited(request.stream(), MAX_BODY_BYTES)])
    if not raw.strip() and not required:
        return {}
    if (request.headers.get("content-type") or "").split(";")[0].strip() != "application/json":
        raise UnsupportedMediaType("send a JSON body with 'Content-Type: application/json'")
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _only(body: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(body) - known)
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; this takes {', '.join(sorted(known))}")


ROUTES = [
    Route("/v1/usage/cap", set_cap, methods=["PUT"]),
    Route("/v1/keys/rotate", rotate_key, methods=["POST"]),
]

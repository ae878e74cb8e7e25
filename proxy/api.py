"""The `/v1` predictions API a caller sees: who they are, what they may do, then the model
server's answer with the bill and the proxy's own URLs added.

A create reaches the model server by one of two paths. Plain creates stream their body through
unread. Creates the proxy must read (an `Idempotency-Key`, a model with a result cache) are read
whole; an idempotent one is created under the prediction id its key was bound to
(`PUT /v1/predictions/{id}`), and a cacheable one may be answered from the cache (proxy/cache.py).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from anyio import to_thread
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from proxy import records
from proxy.auth import Caller
from proxy.billing.biller import annotate as annotate_billing
from proxy.billing.money import share_ms
from proxy.config import CacheRule
from proxy.errors import BadGateway, BadRequest, MethodNotAllowed, NotFound
from proxy.forward import UpstreamReply, hide_upstream, limited, rewrite_urls, segment
from proxy.gateway import Gateway, gateway_of, origin
from proxy.idempotency import Claim, check_key, new_prediction_id, request_hash
from proxy.limits import seconds_until_utc_midnight
from proxy.logs import annotate
from proxy.requests import check_declared_length, check_json_content_type, read_create_body
from proxy.sharing import public_result

_PASSED_ON = ("prefer", "cancel-after")


async def create_prediction(request: Request) -> Response:
    gateway = gateway_of(request)
    caller = await gateway.identify(request, creates=True)
    check_json_content_type(request.headers.get("content-type"))
    check_declared_length(request.headers.get("content-length"), gateway.config.max_body_bytes)
    model, path = _target(request)
    await gateway.billing.check_create(caller, model)  # 402: no subscription pays for it
    idempotency_key = request.headers.get("idempotency-key")
    rule = gateway.cache.rule(model)
    body = None
    if idempotency_key is not None or rule is not None:
        body = await read_create_body(request, gateway.config.max_body_bytes)
    claim = None
    if idempotency_key is not None:
        assert body is not None
        digest = request_hash(body, path)
        claim = await to_thread.run_sync(
            gateway.idempotency.claim, caller.id, check_key(idempotency_key), digest, gateway.clock()
        )
        annotate(request.scope, prediction_id=claim.prediction_id, idempotent_replay=claim.replay)
        if claim.replay:
            return await _replayed(gateway, request, caller, claim, model, body)
    now = gateway.clock()
    if caller.kind == "anonymous":
        await gateway.quota.acquire(caller.id, now)
    kept = False
    try:
        if rule is not None and body is not None:
            cached = await _from_cache(gateway, request, caller, model, body, rule, claim)
            if cached is not None:
                kept = True
                return cached
        reply, prediction = await _create(gateway, request, caller, model, path, body, claim)
        if not reply.ok:
            return reply.passthrough()
        kept = True
    finally:
        if caller.kind == "anonymous":
            await gateway.quota.release(caller.id, now, kept=kept)
    return await _prediction_response(gateway, request, reply, prediction, caller, model)


def _target(request: Request) -> tuple[str | None, str]:
    """The model a create names (None for POST /v1/predictions, which names a version) and the
    model server's path for it."""
    if "owner" not in request.path_params:
        return None, "/v1/predictions"
    owner = segment(request.path_params["owner"], "model")
    name = segment(request.path_params["name"], "model")
    return f"{owner}/{name}", f"/v1/models/{owner}/{name}/predictions"


async def _create(
    gateway: Gateway,
    request: Request,
    caller: Caller,
    model: str | None,
    path: str,
    body: dict[str, Any] | None,
    claim: Claim | None,
) -> tuple[UpstreamReply, Any]:
    """Has the model server create the prediction, and records who created it."""
    if claim is not None:
        assert body is not None
        # Ownership first: if this proxy dies before the answer, the retry finds it recorded.
        await _record_creator(gateway, claim.prediction_id, caller, model)
        reply = await _put(gateway, request, claim.prediction_id, model, body)
    elif body is not None:
        reply = await gateway.upstream.send(
            "POST", path, headers=_json_headers(request), body=_one(json.dumps(body).encode())
        )
    else:
        try:
            reply = await gateway.upstream.send(
                "POST",
                path,
                headers=request.headers,
                body=limited(request.stream(), gateway.config.max_body_bytes),
            )
        except ClientDisconnect:
            raise BadRequest("the request body ended before it was complete") from None
    if not reply.ok:
        return reply, None
    prediction = reply.json()
    prediction_id = _prediction_id(prediction)
    if claim is not None and prediction_id != claim.prediction_id:
        raise BadGateway("the model server created the prediction under another id")
    named, model = model, prediction.get("model") if isinstance(prediction.get("model"), str) else model
    if named is None and model is not None:  # a create by version: canceled if nothing prices it
        await gateway.billing.check_model(caller, model, prediction_id)
    annotate(request.scope, prediction_id=prediction_id)
    await _record_creator(gateway, prediction_id, caller, model)
    if (
        gateway.cache.rule(model) is not None
        and body is not None
        and isinstance(prediction.get("version"), str)
    ):
        key = await _cache_key(gateway, model or "", prediction["version"], body)
        if key is not None:
            await gateway.cache.expect(prediction_id, key)
    return reply, prediction


async def _record_creator(gateway: Gateway, prediction_id: str, caller: Caller, model: str | None) -> None:
    """Who created it, and with which key (its spend cap counts the prediction)."""
    record = gateway.ledger.record_prediction
    await to_thread.run_sync(record, prediction_id, caller.id, model or "", gateway.now(), caller.key_id)


async def _put(
    gateway: Gateway, request: Request, prediction_id: str, model: str | None, body: dict[str, Any]
) -> UpstreamReply:
    """`PUT /v1/predictions/{id}`: the model server creates the prediction under this id once; asked
    again, it answers with the one it has."""
    if model is not None:
        body = {**body, "version": model}  # the model's latest version, as its own path would run
    return await gateway.upstream.send(
        "PUT",
        f"/v1/predictions/{prediction_id}",
        headers=_json_headers(request),
        body=_one(json.dumps(body).encode()),
    )


async def _replayed(
    gateway: Gateway, request: Request, caller: Caller, claim: Claim, model: str | None, body: dict[str, Any]
) -> Response:
    """A retry of an idempotent create: the prediction the first try made (or makes now, if the
    first try never reached the model server)."""
    cached = await _cached_record(gateway, claim.prediction_id, caller)
    if cached is not None:
        return _answer(cached, 201, replayed=True)
    await _record_creator(gateway, claim.prediction_id, caller, model)
    reply = await _put(gateway, request, claim.prediction_id, model, body)
    if not reply.ok:
        return reply.passthrough()
    response = await _prediction_response(gateway, request, reply, reply.json(), caller, model)
    response.status_code = 201
    response.headers["idempotent-replayed"] = "true"
    return response


async def _cache_key(gateway: Gateway, model: str, version: str, body: dict[str, Any]) -> str | None:
    def upload_hash(file_id: str) -> str | None:
        return gateway.ledger.upload_hash(file_id)

    return await to_thread.run_sync(gateway.cache.key, model, version, body["input"], upload_hash)


async def _from_cache(
    gateway: Gateway,
    request: Request,
    caller: Caller,
    model: str | None,
    body: dict[str, Any],
    rule: CacheRule,
    claim: Claim | None,
) -> Response | None:
    """A new prediction answered from the cache, billed as a cache hit; None on a miss."""
    assert model is not None
    facts = await gateway.billing.facts(model)
    price = await gateway.billing.biller.price_for(caller, model)
    if facts is None or facts.version is None or price is None:
        return None
    key = await _cache_key(gateway, model, facts.version, body)
    hit = await gateway.cache.lookup(key) if key is not None else None
    if hit is None:
        return None
    prediction_id = claim.prediction_id if claim is not None else new_prediction_id()
    now = gateway.now().replace("+00:00", "Z")
    prediction: dict[str, Any] = {
        "id": prediction_id,
        "model": model,
        "version": hit.version,
        "input": {name: _abbreviated(value) for name, value in body["input"].items()},
        "output": hit.output,
        "error": None,
        "logs": "",
        "status": "succeeded",
        "created_at": now,
        "started_at": now,
        "completed_at": now,
        "metrics": {"predict_time": 0.0},
        "cached": True,
    }
    billed = share_ms(hit.predict_time_ms, rule.bill_fraction)
    usage = gateway.billing.biller.usage_line(prediction, caller, model, billed, price)
    await _record_creator(gateway, prediction_id, caller, model)
    stored = await gateway.billing.record(dataclasses.replace(usage, kind="cache_hit"))
    annotate_billing(prediction, stored)
    rewrite_urls(prediction, origin(request))
    await to_thread.run_sync(
        gateway.ledger.save_cached_prediction, prediction_id, caller.id, json.dumps(prediction), gateway.now()
    )
    annotate(request.scope, prediction_id=prediction_id, cached=True)
    return _answer(prediction, 201)


async def _cached_record(gateway: Gateway, prediction_id: str, caller: Caller) -> dict[str, Any] | None:
    found = await to_thread.run_sync(gateway.ledger.cached_prediction, prediction_id)
    if found is None:
        return None
    creator, record = found
    if creator != caller.id:
        raise NotFound("prediction not found")
    prediction: dict[str, Any] = json.loads(record)
    return prediction


async def get_prediction(request: Request) -> Response:
    return await _own_prediction(request, "GET", "")


async def cancel_prediction(request: Request) -> Response:
    return await _own_prediction(request, "POST", "/cancel")


async def _own_prediction(request: Request, method: str, suffix: str) -> Response:
    gateway = gateway_of(request)
    caller = await gateway.identify(request)
    prediction_id = segment(request.path_params["id"], "prediction")
    annotate(request.scope, prediction_id=prediction_id)
    owner = await to_thread.run_sync(gateway.ledger.owner_of, prediction_id)
    creator, cached = owner if owner is not None else (None, None)
    if cached is not None and creator == caller.id:
        record = json.loads(cached)
        rewrite_urls(record, origin(request))
        return _answer(record, 200)  # done already: a cancel changes nothing
    # Someone else's prediction looks exactly like one that does not exist, unless the owner
    # made its model's results public (sharing.py): then anyone may read it.
    if creator != caller.id:
        if method == "GET" and creator is not None and gateway.config.public_results:
            return await public_result(gateway.config, gateway.upstream, prediction_id, origin(request))
        raise NotFound("prediction not found")
    reply = await gateway.upstream.send(method, f"/v1/predictions/{prediction_id}{suffix}")
    if reply.status == 404:
        # Forgotten by the model server (it keeps an hour): the proxy's last record answers.
        record = await records.last_known(gateway, prediction_id)
        if record is not None:
            return _answer(await records.present(gateway, request, record, caller, None), 200)
    if not reply.ok:
        return reply.passthrough()
    return await _prediction_response(gateway, request, reply, reply.json(), caller, None)


async def usage(request: Request) -> Response:
    gateway = gateway_of(request)
    caller = await gateway.identify(request)
    body = await gateway.billing.usage(caller)
    if caller.kind == "anonymous":
        now = gateway.clock()
        used = await gateway.quota.used(caller.id, now)
        quota = gateway.config.demo_daily_quota
        body["demo"] = {
            "daily_quota": quota,
            "used_today": used,
            "remaining_today": max(0, quota - used),
            "resets_in_s": seconds_until_utc_midnight(now),
        }
    return JSONResponse(body, headers={"cache-control": "no-store"})


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    # The /v1 catch-all wins over a route that matched the path but not the method, so the
    # 405 is found here, matching from the top (the mount moved root_path to /v1).
    probe = {**scope, "root_path": scope.get("app_root_path", "")}
    routes = [r for r in scope["app"].router.routes if isinstance(r, Route)]
    matches = [route.matches(probe)[0] for route in routes]
    if Match.FULL in matches:
        # A route for this method and path exists, yet the request landed here: the mount took
        # it first. Never answer 405 to a method that is allowed.
        raise NotFound(f"there is no API at {scope['path']}")
    allowed = sorted(
        {
            method
            for route, match in zip(routes, matches, strict=True)
            if match is Match.PARTIAL
            for method in route.methods or ()
            if method != "HEAD"
        }
    )
    if allowed:
        raise MethodNotAllowed(f"{scope['method']} is not allowed here; use {' or '.join(allowed)}")
    raise NotFound(f"there is no API at {scope['path']}; see /v1/models/<owner>/<name>")


ROUTES = [
    Route("/v1/models/{owner}/{name}/predictions", create_prediction, methods=["POST"]),
    Route("/v1/predictions", create_prediction, methods=["POST"]),
    Route("/v1/predictions/{id}", get_prediction, methods=["GET"]),
    Route("/v1/predictions/{id}/cancel", cancel_prediction, methods=["POST"]),
    Route("/v1/usage", usage, methods=["GET"]),
]


def _json_headers(request: Request) -> dict[str, str]:
    passed = {name: request.headers[name] for name in _PASSED_ON if name in request.headers}
    return {**passed, "content-type": "application/json"}


async def _one(chunk: bytes) -> Any:
    yield chunk


def _prediction_id(prediction: Any) -> str:
    if not isinstance(prediction, dict) or not isinstance(prediction.get("id"), str):
        raise BadGateway("the model server answered without a prediction id")
    return segment(prediction["id"], "prediction")


def _abbreviated(value: Any) -> Any:
    # As the model server shows inputs: echoing a megabyte data URL on every poll would cost more
    # than the prediction.
    if isinstance(value, str) and value.startswith("data:") and len(value) > 256:
        return f"{value[: value.find(',') + 1]}... ({len(value)} characters)"
    return value


def _answer(prediction: dict[str, Any], status: int, *, replayed: bool = False) -> JSONResponse:
    headers = {"cache-control": "no-store"}
    if replayed:
        headers["idempotent-replayed"] = "true"
    return JSONResponse(prediction, status_code=status, headers=headers)


async def _prediction_response(
    gateway: Gateway,
    request: Request,
    reply: UpstreamReply,
    prediction: Any,
    caller: Caller,
    model: str | None,
) -> Response:
    await records.remember(gateway, prediction)
    prediction = await gateway.billing.bill(prediction, caller, model)
    if (
        isinstance(prediction, dict)
        and "billing" in prediction
        and gateway.cache.rule(prediction.get("model"))
    ):
        await gateway.cache.keep(prediction, int(prediction["metrics"]["predict_time_ms"]))
    prediction = hide_upstream(prediction, gateway.config.upstream_url, origin(request))
    if isinstance(prediction, dict):
        rewrite_urls(prediction, origin(request))
    headers = {"cache-control": "no-store"}
    if "preference-applied" in reply.headers:
        headers["preference-applied"] = reply.headers["preference-applied"]
    return JSONResponse(prediction, status_code=reply.status, headers=headers)

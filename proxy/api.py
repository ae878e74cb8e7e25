"""The `/v1` API a caller sees: who they are, what they may do, then the model server's answer
with the bill and the proxy's own URLs added."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import stripe
from anyio import to_thread
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from proxy.auth import AddressHasher, Caller, client_address, customer_for_key, presented_key
from proxy.billing import Biller, summarize
from proxy.config import Config
from proxy.errors import (
    BadGateway,
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from proxy.forward import (
    Upstream,
    UpstreamReply,
    body_too_large,
    hide_upstream,
    limited,
    rewrite_urls,
    segment,
)
from proxy.ledger import Ledger
from proxy.limits import DemoQuota, RateLimiter, seconds_until_utc_midnight, utc_day_start
from proxy.logs import annotate


@dataclass(frozen=True)
class Gateway:
    """Everything a request needs, built once in the app's lifespan."""

    config: Config
    ledger: Ledger
    upstream: Upstream
    biller: Biller
    limiter: RateLimiter
    quota: DemoQuota
    addresses: AddressHasher
    clock: Callable[[], datetime.datetime]
    stripe: stripe.StripeClient | None = None  # only with STRIPE_SECRET_KEY

    async def identify(self, request: Request, *, creates: bool = False) -> Caller:
        key = presented_key(request.headers.get("authorization"))
        if key is None:
            peer = request.client.host if request.client else None
            address = client_address(
                peer, request.headers.get("x-forwarded-for"), self.config.trust_x_forwarded_for
            )
            caller = self.addresses.caller(address)
        else:
            caller = await to_thread.run_sync(customer_for_key, self.ledger, key)
        annotate(request.scope, caller=caller.kind)
        self.limiter.hit(caller.id, creates=creates)
        return caller

    def now(self) -> str:
        return self.clock().isoformat(timespec="microseconds")


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway  # type: ignore[no-any-return]


def origin(request: Request) -> str:
    return str(request.base_url).rstrip("/")


async def create_prediction(request: Request) -> Response:
    proxy = gateway(request)
    caller = await proxy.identify(request, creates=True)
    _check_content_type(request.headers.get("content-type"))
    _check_declared_length(request.headers.get("content-length"), proxy.config.max_body_bytes)
    model = None
    if "owner" in request.path_params:
        owner = segment(request.path_params["owner"], "model")
        name = segment(request.path_params["name"], "model")
        model, path = f"{owner}/{name}", f"/v1/models/{owner}/{name}/predictions"
    else:
        path = "/v1/predictions"
    reserved = False
    if caller.kind == "anonymous":
        now = proxy.clock()
        since = utc_day_start(now).isoformat(timespec="microseconds")
        used = await to_thread.run_sync(proxy.ledger.count_predictions_since, caller.id, since)
        proxy.quota.acquire(caller.id, used, now)
        reserved = True
    try:
        reply = await _forward_body(proxy, request, path)
        if not reply.ok:
            return reply.passthrough()
        prediction = reply.json()
        prediction_id = _prediction_id(prediction)
        model = prediction.get("model") if isinstance(prediction.get("model"), str) else model
        annotate(request.scope, prediction_id=prediction_id)
        await to_thread.run_sync(
            proxy.ledger.record_prediction, prediction_id, caller.id, model or "", proxy.now()
        )
    finally:
        if reserved:
            proxy.quota.release(caller.id)
    return await _prediction_response(proxy, request, reply, prediction, caller, model)


async def get_prediction(request: Request) -> Response:
    return await _own_prediction(request, "GET", "")


async def cancel_prediction(request: Request) -> Response:
    return await _own_prediction(request, "POST", "/cancel")


async def _own_prediction(request: Request, method: str, suffix: str) -> Response:
    proxy = gateway(request)
    caller = await proxy.identify(request)
    prediction_id = segment(request.path_params["id"], "prediction")
    annotate(request.scope, prediction_id=prediction_id)
    creator = await to_thread.run_sync(proxy.ledger.creator_of, prediction_id)
    # Someone else's prediction looks exactly like one that does not exist.
    if creator != caller.id:
        raise NotFound("prediction not found")
    reply = await proxy.upstream.send(method, f"/v1/predictions/{prediction_id}{suffix}")
    if not reply.ok:
        return reply.passthrough()
    return await _prediction_response(proxy, request, reply, reply.json(), caller, None)


async def upload_file(request: Request) -> Response:
    """Streams a customer's upload to the model server, which keeps it for an hour; its URL can
    then be a prediction's input. Visitors on the demo send images as data URLs instead."""
    proxy = gateway(request)
    caller = await proxy.identify(request)
    if caller.kind == "anonymous":
        raise Unauthorized("uploading files needs an API key; the free demo takes images as data URLs")
    media_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media_type != "multipart/form-data":
        raise UnsupportedMediaType("upload a file as multipart/form-data with the field 'content'")
    _check_declared_length(request.headers.get("content-length"), proxy.config.max_upload_bytes)
    body = limited(request.stream(), proxy.config.max_upload_bytes)
    try:
        reply = await proxy.upstream.send("POST", "/v1/files", headers=request.headers, body=body)
    except ClientDisconnect:
        raise BadRequest("the upload ended before it was complete") from None
    if not reply.ok:
        return reply.passthrough()
    file_object = reply.json()
    if not isinstance(file_object, dict) or not isinstance(file_object.get("id"), str):
        raise BadGateway("the model server answered an upload without a file id")
    await to_thread.run_sync(proxy.ledger.record_upload, segment(file_object["id"], "file"), caller.id,
                             proxy.now())
    return JSONResponse(hide_upstream(file_object, proxy.config.upstream_url, origin(request)), status_code=201)


async def own_file(request: Request) -> Response:
    proxy = gateway(request)
    caller = await proxy.identify(request)
    file_id = segment(request.path_params["id"], "file")
    if await to_thread.run_sync(proxy.ledger.uploader_of, file_id) != caller.id:
        raise NotFound("file not found")
    reply = await proxy.upstream.send(request.method, f"/v1/files/{file_id}")
    if not reply.ok or reply.status == 204:
        return reply.passthrough()
    return JSONResponse(hide_upstream(reply.json(), proxy.config.upstream_url, origin(request)))


async def get_model(request: Request) -> Response:
    proxy = gateway(request)
    await proxy.identify(request)
    owner = segment(request.path_params["owner"], "model")
    name = segment(request.path_params["name"], "model")
    path = f"/v1/models/{owner}/{name}"
    if "id" in request.path_params:
        path += f"/versions/{segment(request.path_params['id'], 'version')}"
    reply = await proxy.upstream.send("GET", path)
    if not reply.ok:
        return reply.passthrough()
    model_object = reply.json()
    if "id" not in request.path_params:
        proxy.biller.remember_price(f"{owner}/{name}", model_object)
    return JSONResponse(hide_upstream(model_object, proxy.config.upstream_url, origin(request)))


async def usage(request: Request) -> Response:
    proxy = gateway(request)
    caller = await proxy.identify(request)
    rows = await to_thread.run_sync(proxy.ledger.usage_of, caller.id)
    body: dict[str, Any] = summarize(rows)
    if caller.kind == "anonymous":
        now = proxy.clock()
        since = utc_day_start(now).isoformat(timespec="microseconds")
        used = await to_thread.run_sync(proxy.ledger.count_predictions_since, caller.id, since)
        quota = proxy.config.demo_daily_quota
        body["demo"] = {
            "daily_quota": quota,
            "used_today": used,
            "remaining_today": max(0, quota - used),
            "resets_in_s": seconds_until_utc_midnight(now),
        }
    return JSONResponse(body, headers={"cache-control": "no-store"})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    proxy = gateway(request)
    checks = {
        "ledger": await to_thread.run_sync(proxy.ledger.ping),
        "model_server": await proxy.upstream.ready(),
    }
    if all(checks.values()):
        return JSONResponse({"status": "ready", "checks": checks})
    missing = " and ".join(name.replace("_", " ") for name, ok in checks.items() if not ok)
    return JSONResponse(
        {"detail": f"not ready: the {missing} cannot be reached", "checks": checks},
        status_code=503,
        headers={"retry-after": "5"},
    )


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    # The /v1 catch-all wins over a route that matched the path but not the method, so the
    # 405 is found here, matching from the top (the mount moved root_path to /v1).
    probe = {**scope, "root_path": scope.get("app_root_path", "")}
    allowed = sorted(
        method
        for route in ROUTES
        if route.matches(probe)[0] is Match.PARTIAL
        for method in route.methods or ()
        if method != "HEAD"
    )
    if allowed:
        raise MethodNotAllowed(f"{scope['method']} is not allowed here; use {' or '.join(allowed)}")
    raise NotFound(f"there is no API at {scope['path']}; see /v1/models/<owner>/<name>")


ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/v1/models/{owner}/{name}/predictions", create_prediction, methods=["POST"]),
    Route("/v1/predictions", create_prediction, methods=["POST"]),
    Route("/v1/predictions/{id}", get_prediction, methods=["GET"]),
    Route("/v1/predictions/{id}/cancel", cancel_prediction, methods=["POST"]),
    Route("/v1/models/{owner}/{name}", get_model, methods=["GET"]),
    Route("/v1/models/{owner}/{name}/versions/{id}", get_model, methods=["GET"]),
    Route("/v1/usage", usage, methods=["GET"]),
    Route("/v1/files", upload_file, methods=["POST"]),
    Route("/v1/files/{id}", own_file, methods=["GET", "DELETE"]),
]


def _check_content_type(content_type: str | None) -> None:
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        sent = f"'{content_type}'" if content_type else "no Content-Type"
        raise UnsupportedMediaType(
            f"a prediction is created with Content-Type: application/json; this request sent {sent}"
        )


def _check_declared_length(content_length: str | None, limit: int) -> None:
    if content_length is None:
        return
    if not content_length.strip().isdigit():
        raise BadRequest("Content-Length must be a whole number of bytes")
    if int(content_length) > limit:
        raise PayloadTooLarge(body_too_large(limit))


async def _forward_body(proxy: Gateway, request: Request, path: str) -> UpstreamReply:
    body = limited(request.stream(), proxy.config.max_body_bytes)
    try:
        return await proxy.upstream.send("POST", path, headers=request.headers, body=body)
    except ClientDisconnect:
        raise BadRequest("the request body ended before it was complete") from None


def _prediction_id(prediction: Any) -> str:
    if not isinstance(prediction, dict) or not isinstance(prediction.get("id"), str):
        raise BadGateway("the model server answered without a prediction id")
    return segment(prediction["id"], "prediction")


async def _prediction_response(
    proxy: Gateway,
    request: Request,
    reply: UpstreamReply,
    prediction: Any,
    caller: Caller,
    model: str | None,
) -> Response:
    prediction = await proxy.biller.bill(prediction, caller, model)
    prediction = hide_upstream(prediction, proxy.config.upstream_url, origin(request))
    if isinstance(prediction, dict):
        rewrite_urls(prediction, origin(request))
    headers = {"cache-control": "no-store"}
    if "preference-applied" in reply.headers:
        headers["preference-applied"] = reply.headers["preference-applied"]
    return JSONResponse(prediction, status_code=reply.status, headers=headers)

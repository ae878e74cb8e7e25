"""The inference server's HTTP API: the subset of Replicate's v1 API that README.md's "The API" lists."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from inference import catalogue, files, unoffered
from inference.batcher import Batcher, Job
from inference.bodies import cancel_after_seconds, read_json, wait_seconds
from inference.config import Settings
from inference.errors import (
    BadRequest,
    InferenceError,
    InvalidInput,
    NotFound,
    NotOffered,
    Unauthorized,
    Unavailable,
)
from inference.manifest import Manifest
from inference.metrics import CONTENT_TYPE
from inference.openapi import docs_html, openapi_spec
from inference.predictions import Prediction, RemoteRecords, new_id, urls_of
from inference.registry import Models, check_weight
from inference.webhooks import check_request as check_webhook

log = logging.getLogger("inference")
_CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")


# --- routes -------------------------------------------------------------------------------------


def _models(request: Request) -> Models:
    return request.app.state.models


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    models = _models(request)
    if models.ready:
        return JSONResponse({"status": "ready", "models": models.loaded_names})
    loading = sorted(set(models.manifests) - set(models.loaded_names) - set(models.problems))
    raise Unavailable(f"not ready: loading {loading}, failed {sorted(models.problems)}", retry_after=2)


async def metrics(request: Request) -> Response:
    return Response(_models(request).metrics.render(), media_type=CONTENT_TYPE)


async def openapi(request: Request) -> Response:
    models = _models(request)
    return JSONResponse(openapi_spec(list(models.manifests.values()), models.settings.owner))


async def docs(request: Request) -> Response:
    models = _models(request)
    return HTMLResponse(docs_html(openapi_spec(list(models.manifests.values()), models.settings.owner)))


async def create_for_model(request: Request) -> Response:
    models = _models(request)
    owner, name = request.path_params["owner"], request.path_params["name"]
    models.manifest(owner, name)  # an unknown model is refused before its body is read
    body = await _read_create_body(request)
    # Chosen only now, with no await before the batcher is reserved: a reload that promoted a new
    # version while the body arrived must not send this request to the retired one.
    return await _create(request, models.route(models.manifest(owner, name)), body)


async def reload_model(request: Request) -> Response:
    """POST /v1/admin/models/{name}/reload [{"canary_weight": 0.1}]: load the folder's new
    version without dropping a request (the proxy does not expose /v1/admin)."""
    body = await request.body()
    options = await read_json(request, 4096) if body else {}
    if not isinstance(options, dict):
        raise BadRequest('the body must be a JSON object, e.g. {"canary_weight": 0.1}')
    outcome = await _models(request).reload(
        request.path_params["name"], check_weight(options.get("canary_weight"))
    )
    return JSONResponse(outcome)


async def promote_model(request: Request) -> Response:
    options = await read_json(request, 4096)
    if not isinstance(options, dict) or not isinstance(options.get("version"), str):
        raise BadRequest('the body must name the version to promote: {"version": "..."}')
    await _models(request).promote(request.path_params["name"], options["version"])
    return JSONResponse({"model": request.path_params["name"], "version": options["version"]})


async def create(request: Request, prediction_id: str | None = None) -> Response:
    body = await _read_create_body(request)
    version = body.get("version")
    if not isinstance(version, str) or not version:
        raise BadRequest(
            "'version' is required: a model version id, or use POST /v1/models/{owner}/{name}/predictions"
        )
    return await _create(request, _models(request).by_version(version), body, prediction_id)


async def create_with_id(request: Request) -> Response:
    """PUT /v1/predictions/{id}: a create the client may retry safely; the id is the client's."""
    prediction_id = request.path_params["id"]
    if not _CLIENT_ID.fullmatch(prediction_id):
        raise InvalidInput("a prediction id is 1 to 100 letters, digits, '-' or '_'")
    existing = await _find(request)
    if existing is not None:
        return JSONResponse(existing, status_code=200)
    return await create(request, prediction_id)


async def upload_file(request: Request) -> Response:
    uploads = _models(request).uploads
    upload = await uploads.receive(request)
    return JSONResponse(upload.to_json(_base(request), uploads.ttl_s), status_code=201)


async def get_file(request: Request) -> Response:
    uploads = _models(request).uploads
    upload = await uploads.get(request.path_params["id"])
    return JSONResponse(upload.to_json(_base(request), uploads.ttl_s))


async def delete_file(request: Request) -> Response:
    await _models(request).uploads.delete(request.path_params["id"])
    return Response(status_code=204)


async def get_prediction(request: Request) -> Response:
    return JSONResponse(_found(request, await _find(request)))


async def cancel_prediction(request: Request) -> Response:
    models, prediction_id = _models(request), request.path_params["id"]
    prediction = models.store.get(prediction_id)
    if prediction is not None:
        models.cancel(prediction)
        return JSONResponse(prediction.to_json(_base(request)))
    record = None if models.remote is None else await models.remote.cancel(prediction_id)
    return JSONResponse(_found(request, _here(request, record)))


async def _find(request: Request) -> dict[str, Any] | None:
    """The prediction's JSON: this server's own, else (under Ray Serve) another replica's."""
    models, prediction_id = _models(request), request.path_params["id"]
    prediction = models.store.get(prediction_id)
    if prediction is not None:
        return prediction.to_json(_base(request))
    return None if models.remote is None else _here(request, await models.remote.get(prediction_id))


def _here(request: Request, record: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if record is None else {**record, "urls": urls_of(_base(request), record["id"])}


def _found(request: Request, record: dict[str, Any] | None) -> dict[str, Any]:
    if record is None:
        raise NotFound(f"no prediction {request.path_params['id']!r} (finished ones are kept for an hour)")
    return record


async def _read_create_body(request: Request) -> dict[str, Any]:
    body = await read_json(request, _models(request).settings.max_body_bytes)
    if not isinstance(body, dict) or "input" not in body:
        raise BadRequest('the body must be a JSON object with an "input" object, e.g. {"input": {...}}')
    return body


async def _create(
    request: Request, manifest: Manifest, body: dict[str, Any], prediction_id: str | None = None
) -> Response:
    models = _models(request)
    batcher = models.batcher(manifest)
    with batcher.reserve():  # a version being retired waits for this request
        return await _enqueue(request, models, batcher, manifest, body, prediction_id)


def _resolve_and_prepare(
    models: Models, manifest: Manifest, batcher: Batcher, values: dict[str, Any]
) -> tuple[dict[str, Any], Any]:
    """On a decode thread: the inputs decoded and checked, then prepared for the model (its
    preprocess, if it has one), while the model runs other batches."""
    inputs = files.resolve(
        manifest.schema.fields,
        values,
        max_pixels=models.settings.max_image_pixels,
        uploads=models.uploads,
        fetch_hosts=models.settings.fetch_hosts,
        max_fetch_bytes=models.settings.max_body_bytes,
    )
    try:
        return inputs, batcher.model.prepare(inputs)
    except InferenceError:
        files.cleanup(inputs)
        raise
    except Exception as exc:
        files.cleanup(inputs)
        raise InvalidInput(f"the model could not prepare this input: {exc}") from None


async def _enqueue(
    request: Request,
    models: Models,
    batcher: Batcher,
    manifest: Manifest,
    body: dict[str, Any],
    prediction_id: str | None,
) -> Response:
    wait = wait_seconds(request.headers.get("prefer"), models.settings.max_wait_s)
    cancel_after = cancel_after_seconds(request.headers.get("cancel-after"))
    if body.get("stream") is True:
        raise NotOffered(f"streamed output is not offered: {manifest.name} does not stream its output")
    values = manifest.schema.validate(body["input"])
    webhook, webhook_events = None, frozenset[str]()
    if body.get("webhook") is not None:
        webhook, webhook_events = check_webhook(
            body["webhook"],
            body.get("webhook_events_filter"),
            secret=models.settings.webhook_secret,
            allowed_hosts=models.settings.webhook_hosts,
        )
    batcher.check_capacity()  # before decoding: a full queue answers 429 at once
    inputs, prepared = await anyio.to_thread.run_sync(_resolve_and_prepare, models, manifest, batcher, values)
    prediction = Prediction(
        id=prediction_id or new_id(),
        model=f"{models.settings.owner}/{manifest.name}",
        version=manifest.version,
        input=body["input"],
        base_url=_base(request),
        webhook=webhook,
        webhook_events=webhook_events,
    )
    deadline = None if cancel_after is None else time.monotonic() + cancel_after
    try:
        batcher.submit(Job(prediction, inputs, deadline, prepared=prepared))
    except InferenceError:
        files.cleanup(inputs)
        raise
    models.store.add(prediction)
    catalogue.runs_of(request)[manifest.name] += 1
    models.publish(prediction)
    if wait:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(prediction.done.wait(), wait)
    if models.remote is not None:
        await models.remote.synced()  # so that a GET by id on another replica finds it
    return JSONResponse(prediction.to_json(_base(request)), status_code=201)


# --- errors and auth ----------------------------------------------------------------------------


def error_response(exc: InferenceError) -> JSONResponse:
    """The one way an error is answered: its status, `{"detail": ...}`, and Retry-After or
    WWW-Authenticate where it has one."""
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


async def inference_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InferenceError)
    _models(request).metrics.errors.labels(str(exc.status_code), type(exc).__name__).inc()
    return error_response(exc)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = "no such route" if exc.status_code == 404 else exc.detail
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


async def server_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error; it has been logged"}, status_code=500)


class RequireToken:
    """Every /v1/ route needs `Authorization: Bearer <INFERENCE_TOKEN>` (or Replicate's `Token`)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            header = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, token = header.partition(b" ")
            if scheme.lower() not in (b"bearer", b"token") or not hmac.compare_digest(
                token.strip(), self._expected
            ):
                refused = Unauthorized(
                    "missing Authorization header" if not header else "invalid inference token"
                )
                await error_response(refused)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    load_before_serving: bool = False,
    remote_records: Callable[[], RemoteRecords] | None = None,
) -> Starlette:
    """`load_before_serving` makes start-up wait for every model: for a host such as Ray Serve
    that sends traffic to a replica as soon as its start-up ends, not when /readyz says so.
    `remote_records` makes, per process, what finds predictions that other replicas own."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        models = Models(settings, None if remote_records is None else remote_records())
        app.state.models = models
        app.state.runs = Counter[str]()
        if models.remote is not None:
            await models.remote.open(models)
        loading = asyncio.create_task(models.load_all())
        try:
            if load_before_serving:
                await asyncio.shield(loading)
            yield
        finally:
            loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loading
            await models.close()

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/openapi.json", openapi),
        Route("/docs", docs),
        Route("/v1/models", catalogue.list_models),
        Route("/v1/models/{owner}/{name}", catalogue.get_model),
        Route("/v1/models/{owner}/{name}/versions", catalogue.list_versions),
        Route("/v1/models/{owner}/{name}/versions/{version}", catalogue.get_version),
        Route("/v1/models/{owner}/{name}/predictions", create_for_model, methods=["POST"]),
        Route("/v1/predictions", create, methods=["POST"]),
        Route("/v1/predictions", catalogue.list_predictions),
        Route("/v1/files", upload_file, methods=["POST"]),
        Route("/v1/files", catalogue.list_files),
        Route("/v1/files/{id}", get_file),
        Route("/v1/files/{id}", delete_file, methods=["DELETE"]),
        Route("/v1/predictions/{id}", get_prediction),
        Route("/v1/predictions/{id}", create_with_id, methods=["PUT"]),
        Route("/v1/predictions/{id}/cancel", cancel_prediction, methods=["POST"]),
        Route("/v1/admin/models/{name}/reload", reload_model, methods=["POST"]),
        Route("/v1/admin/models/{name}/promote", promote_model, methods=["POST"]),
        *unoffered.routes(),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            InferenceError: inference_error,
            HTTPException: http_error,
            Exception: server_error,
        },
    )
    app.add_middleware(RequireToken, token=settings.token)
    return app

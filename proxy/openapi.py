"""The proxy's API as an OpenAPI document (`/openapi.json`, read as a page at `/docs`): every
route it answers under /v1, what each takes, and every status it may answer, with Replicate's
client call that uses it. Schemathesis checks the running proxy against it in
tests/stack/test_openapi_fuzz.py, so the document cannot drift from the code unnoticed.

Not described: the site, the checkout pages and the webhook receivers, which are not the API;
and the routes of Replicate's API that are not offered here (they answer 501, see unoffered.py).
A 402 answers a create that no subscription pays for (the model's price is not on it, or it is
overdue) or that a spend cap stops.
"""

from __future__ import annotations

from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from proxy.errors import RequestError
from proxy.gateway import gateway_of
from proxy.openapi_schemas import ref, schemas

_STATUS_TEXT = {
    400: "a body, header, cursor or limit the proxy cannot read",
    401: "an unknown, revoked or malformed API key; or a call that needs a key made without one",
    402: "no subscription pays for this model, the subscription is overdue, or a spend cap is reached",
    404: "no such model, version, prediction or file, or one that is not yours",
    413: "a body over MAX_BODY_BYTES (or an upload over MAX_UPLOAD_BYTES)",
    415: "a body that is not of the type the route takes",
    422: "an input that breaks the model's schema",
    429: "a rate limit or the daily demo quota is used up; retry after Retry-After seconds",
    501: "something Replicate offers that this API does not (named in the detail)",
    502: "the model server answered something the proxy could not use",
    503: "the model server or the database is loading or unreachable; retry after Retry-After seconds",
    504: "the model server did not answer in time",
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
_UPSTREAM = [502, 503, 504]  # any route that asks the model server
_CREATE = [400, 401, 402, 404, 413, 415, 422, 429, 501, *_UPSTREAM]
_READ = [401, 404, 429, *_UPSTREAM]
_LIST = [400, 401, 429, *_UPSTREAM]
_LIST_PARAMETERS = [
    {
        "name": "cursor",
        "in": "query",
        "required": False,
        "description": "opaque; take it from a page's next or previous URL",
        "schema": {"type": "string"},
    },
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": "the most results a page holds (default and most: 100)",
        "schema": {"type": "integer", "minimum": 1, "maximum": 100},
    },
]


def _json(description: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}, **extra}


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _header(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
    }


def _op(
    operation_id: str,
    summary: str,
    responses: dict[str, Any],
    errors: list[int],
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    media_type: str = "application/json",
) -> dict[str, Any]:
    found: dict[str, Any] = {"operationId": operation_id, "summary": summary, "responses": dict(responses)}
    for code in errors:
        extra = {"headers": _RETRY_AFTER} if code in (429, 503) else {}
        found["responses"][str(code)] = _json(_STATUS_TEXT[code], ref("Error"), **extra)
    if parameters:
        found["parameters"] = parameters
    if body is not None:
        found["requestBody"] = {"required": True, "content": {media_type: {"schema": body}}}
    return found


_BY_ID = {"id": "$response.body#/id"}
_PREDICTION_LINKS = {
    "GetPrediction": {"operationId": "getPrediction", "parameters": _BY_ID},
    "CancelPrediction": {"operationId": "cancelPrediction", "parameters": _BY_ID},
}


def _create(operation_id: str, summary: str, *, with_version: bool, model_params: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "input": {"type": "object", "description": "checked against the model's input schema"},
        "webhook": {"type": "string", "format": "uri"},
        "webhook_events_filter": {
            "type": "array",
            "items": {"type": "string", "enum": ["start", "output", "logs", "completed"]},
        },
        "stream": {"type": "boolean", "description": "true is answered 501: no model here streams"},
    }
    required = ["input"]
    if with_version:
        properties["version"] = {"type": "string", "description": "a version id, or owner/name[:version id]"}
        required.append("version")
    return _op(
        operation_id,
        summary,
        {
            "201": _json(
                "created (with Prefer: wait, once done or the wait is over)",
                ref("Prediction"),
                links=_PREDICTION_LINKS,
            )
        },
        _CREATE,
        parameters=[
            *([_path("owner"), _path("name")] if model_params else []),
            _header("Prefer", "wait or wait=N: hold the answer until done, up to N s (at most 60)"),
            _header("Cancel-After", "e.g. 30s or 5m: fail the prediction if it has not started by then"),
            _header(
                "Idempotency-Key",
                "1 to 255 printable characters: a retry with the same key and body gets the first "
                "prediction (201, Idempotent-Replayed: true); the same key with another body is a 422",
            ),
        ],
        body={"type": "object", "required": required, "properties": properties},
    )


def spec(owner: str, image_model: tuple[str, str] | None) -> dict[str, Any]:
    """The document; `image_model` (name, input field) lets an upload link to a prediction."""
    model = [_path("owner"), _path("name")]
    upload_links = {}
    if image_model is not None:
        upload_links["PredictWithFile"] = {
            "operationId": "createModelPrediction",
            "parameters": {"path.owner": owner, "path.name": image_model[0]},
            "requestBody": {"input": {image_model[1]: "$response.body#/urls/get"}},
        }
    paths: dict[str, Any] = {
        "/v1/models/{owner}/{name}/predictions": {
            "post": _create(
                "createModelPrediction",
                "Run a model (models.predictions.create, run)",
                with_version=False,
                model_params=True,
            )
        },
        "/v1/predictions": {
            "post": _create(
                "createPrediction",
                "Run a model version (predictions.create(version=...))",
                with_version=True,
                model_params=False,
            ),
            "get": _op(
                "listPredictions",
                "Your predictions, newest first (predictions.list); needs a key",
                {"200": _json("a page", ref("PredictionPage"))},
                _LIST,
                _LIST_PARAMETERS,
            ),
        },
        "/v1/predictions/{id}": {
            "get": _op(
                "getPrediction",
                "One of your predictions (predictions.get, reload, wait)",
                {"200": _json("the prediction", ref("Prediction"), links=_PREDICTION_LINKS)},
                _READ,
                [_path("id")],
            ),
        },
        "/v1/predictions/{id}/cancel": {
            "post": _op(
                "cancelPrediction",
                "Cancel one of your predictions (cancel)",
                {"200": _json("the prediction", ref("Prediction"))},
                _READ,
                [_path("id")],
            ),
        },
        "/v1/models": {
            "get": _op(
                "listModels",
                "The models (models.list)",
                {"200": _json("a page", ref("ModelPage"))},
                _LIST,
                _LIST_PARAMETERS,
            ),
        },
        "/v1/models/{owner}/{name}": {
            "get": _op(
                "getModel",
                "A model: latest version, run count, cover, default example (models.get)",
                {"200": _json("the model", ref("Model"))},
                _READ,
                model,
            ),
        },
        "/v1/models/{owner}/{name}/versions": {
            "get": _op(
                "listVersions",
                "The model's versions, newest first (model.versions.list)",
                {"200": _json("a page", ref("VersionPage"))},
                [*_LIST, 404],
                [*model, *_LIST_PARAMETERS],
            ),
        },
        "/v1/models/{owner}/{name}/versions/{id}": {
            "get": _op(
                "getVersion",
                "A version with its input schema (versions.get)",
                {"200": _json("the version", ref("Version"))},
                _READ,
                [*model, _path("id")],
            ),
        },
        "/v1/files": {
            "post": _op(
                "createFile",
                "Upload a file, kept an hour; pass its urls.get as an input (files.create); needs a key",
                {"201": _json("the file", ref("File"), links=upload_links)},
                [400, 401, 413, 415, 422, 429, *_UPSTREAM],
                body={
                    "type": "object",
                    "required": ["content"],
                    "properties": {
                        "content": {"type": "string", "format": "binary"},
                        "metadata": {"type": "string", "description": "a JSON object"},
                    },
                },
                media_type="multipart/form-data",
            ),
            "get": _op(
                "listFiles",
                "Your uploads still kept, newest first (files.list); needs a key",
                {"200": _json("a page", ref("FilePage"))},
                _LIST,
                _LIST_PARAMETERS,
            ),
        },
        "/v1/files/{id}": {
            "get": _op(
                "getFile",
                "One of your uploads (files.get)",
                {"200": _json("the file", ref("File"))},
                _READ,
                [_path("id")],
            ),
            "delete": _op(
                "deleteFile",
                "Delete one of your uploads (files.delete)",
                {"204": {"description": "deleted"}},
                _READ,
                [_path("id")],
            ),
        },
        "/v1/usage": {
            "get": _op(
                "getUsage",
                "What you have used and what it cost; visitors see their demo quota",
                {"200": _json("your totals", ref("Usage"))},
                [401, 429, 503],
            ),
        },
    }
    paths["/v1/usage/cap"] = {
        "put": _op(
            "setSpendCap",
            "Your own monthly spend cap, for this key or all your keys (null removes it); needs a key",
            {
                "200": _json(
                    "your caps now", {"type": "object", "properties": {"spend_caps": ref("SpendCaps")}}
                )
            },
            [400, 401, 415, 429, 503],
            body={
                "type": "object",
                "required": ["monthly"],
                "properties": {
                    "scope": {"type": "string", "enum": ["key", "customer"], "default": "key"},
                    "monthly": {"type": "string", "nullable": True, "description": 'USD, e.g. "25.00"'},
                },
            },
        )
    }
    paths["/v1/keys/rotate"] = {
        "post": _op(
            "rotateKey",
            "A new key, shown once; the one you sent keeps working for the grace period; needs a key",
            {"201": _json("the new key", ref("RotatedKey"))},
            [400, 401, 415, 429, 503],
            body={
                "type": "object",
                "properties": {"grace_period_s": {"type": "integer", "minimum": 0, "maximum": 7 * 86400}},
            },
        )
    }
    status = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}
    public: list[dict[str, list[str]]] = [{}]
    paths["/healthz"] = {
        "get": {**_op("healthz", "Alive", {"200": _json("alive", status)}, []), "security": public}
    }
    paths["/readyz"] = {
        "get": {
            **_op("readyz", "The ledger and the model server answer", {"200": _json("ready", status)}, [503]),
            "security": public,
        }
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "modelfolio API",
            "version": "1",
            "description": "A subset of Replicate's HTTP API: the official clients work with base_url "
            "set here. Send your key as Authorization: Bearer <key> (or Replicate's Token <key>); "
            "without one you are an anonymous visitor on the daily demo quota, who may create, read "
            'and cancel predictions but not upload or list. Errors are JSON {"detail": "..."}. '
            "Trainings, deployments, hardware, collections, accounts, model creation and search, and "
            "streamed output are not offered: those routes answer 501 naming what is not offered.",
        },
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "key": {"type": "http", "scheme": "bearer", "description": "an API key, mf_..."}
            },
        },
        "security": [{}, {"key": []}],  # a key, or none (the demo)
        "paths": paths,
    }


async def _image_model(request: Request) -> tuple[str, str] | None:
    """A model with a file input, for the upload link: the document works without one."""
    gateway = gateway_of(request)
    try:
        reply = await gateway.upstream.send("GET", "/v1/models?limit=100")
        models = reply.json().get("results", []) if reply.ok else []
    except (RequestError, AttributeError):
        return None
    for model in models:
        try:
            inputs = model["latest_version"]["openapi_schema"]["components"]["schemas"]["Input"]["properties"]
        except (KeyError, TypeError):
            continue
        for name, field in inputs.items():
            if isinstance(field, dict) and field.get("format") == "uri":
                return str(model["name"]), str(name)
    return None


async def openapi_json(request: Request) -> Response:
    owner = gateway_of(request).config.owner
    return JSONResponse(spec(owner, await _image_model(request)))


async def docs(request: Request) -> Response:
    document = spec(gateway_of(request).config.owner, None)
    rows = "".join(
        f"<h2><code>{method.upper()} {escape(path)}</code></h2><p>{escape(op.get('summary', ''))}</p>"
        f"<p>Answers: {', '.join(sorted(op['responses']))}</p>"
        for path, methods in document["paths"].items()
        for method, op in methods.items()
    )
    info = document["info"]
    return HTMLResponse(
        f"<!doctype html><html lang=en><meta charset=utf-8><title>{escape(info['title'])}</title>"
        f"<h1>{escape(info['title'])}</h1><p>{escape(info['description'])}</p>"
        f"<p>Machine-readable: <a href=/openapi.json>/openapi.json</a>.</p>{rows}</html>"
    )


ROUTES = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
]

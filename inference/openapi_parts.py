"""The pieces of the inference server's OpenAPI document: the objects it answers with (as
Replicate's clients read them), each route's parameters, and every status it may answer.

Schemathesis checks the server against this document in tests/inference/test_openapi_fuzz.py, so
a route that answers something the document does not say fails the build.
"""

from __future__ import annotations

from typing import Any

NOT_OFFERED_NOTE = (
    "Trainings, deployments, hardware, collections, accounts, model creation and search, and "
    "streamed output are not offered: those routes answer 501 naming what is not offered."
)
_STATUS_TEXT = {
    400: "a body, header, cursor or limit this server cannot read",
    401: "no token, or not the right one",
    404: "no such model, version, prediction or file",
    413: "a body or image over its limit",
    415: "a body that is not of the type the route takes",
    422: "an input that breaks the model's schema",
    429: "the model's queue is full; retry after Retry-After seconds",
    501: "something Replicate offers that this server does not (named in the detail)",
    503: "models still loading; retry after Retry-After seconds",
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
CREATE_ERRORS = [400, 401, 404, 413, 415, 422, 429, 501, 503]
LIST_ERRORS = [400, 401]


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


_TIME = {"type": "string", "format": "date-time"}
_STATUSES = ["starting", "processing", "succeeded", "failed", "canceled"]
_URL = {"type": "string", "format": "uri"}
_TEXT = {"type": "string"}


def schemas() -> dict[str, Any]:
    """The objects, with the fields and types the official clients validate."""
    prediction = {
        "type": "object",
        "required": ["id", "model", "version", "status", "input", "created_at"],
        "properties": {
            "id": {"type": "string"},
            "model": {"type": "string", "description": "owner/name"},
            "version": {"type": "string"},
            "input": {"type": "object"},
            "output": {"description": "the model's output (JSON); files as data URLs"},
            "error": nullable({"type": "string"}),
            "logs": nullable({"type": "string"}),
            "status": {"type": "string", "enum": _STATUSES},
            "created_at": _TIME,
            "started_at": nullable(_TIME),
            "completed_at": nullable(_TIME),
            "metrics": {"type": "object", "properties": {"predict_time": {"type": "number"}}},
            "urls": {
                "type": "object",
                "required": ["get", "cancel"],
                "properties": {"get": _URL, "cancel": _URL},
            },
        },
    }
    version = {
        "type": "object",
        "required": ["id", "created_at", "cog_version", "openapi_schema"],
        "properties": {
            "id": {"type": "string"},
            "created_at": _TIME,
            "cog_version": {"type": "string"},
            "openapi_schema": {"type": "object"},
        },
    }
    model = {
        "type": "object",
        "required": [
            "url",
            "owner",
            "name",
            "description",
            "visibility",
            "github_url",
            "paper_url",
            "license_url",
            "run_count",
            "cover_image_url",
            "default_example",
            "latest_version",
        ],
        "properties": {
            "url": _URL,
            "owner": {"type": "string"},
            "name": {"type": "string"},
            "description": nullable({"type": "string"}),
            "visibility": {"type": "string", "enum": ["public", "private"]},
            "github_url": nullable(_URL),
            "paper_url": nullable(_URL),
            "license_url": nullable(_URL),
            "run_count": {"type": "integer", "minimum": 0},
            "cover_image_url": nullable(_URL),
            "default_example": nullable({**ref("Prediction"), "description": "a real run of an example"}),
            "latest_version": nullable(ref("Version")),
            "price_per_second": {"type": "string", "description": "USD per second of predict_time"},
            "hardware": {"type": "string"},
        },
    }
    file = {
        "type": "object",
        "required": [
            *("id", "name", "content_type", "size", "etag"),
            *("checksums", "metadata", "created_at", "urls"),
        ],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "content_type": {"type": "string"},
            "size": {"type": "integer", "minimum": 0},
            "etag": {"type": "string"},
            "checksums": {"type": "object", "properties": {"sha256": {"type": "string"}}},
            "metadata": {"type": "object"},
            "created_at": _TIME,
            "expires_at": nullable(_TIME),
            "urls": {"type": "object", "required": ["get"], "properties": {"get": _URL}},
        },
    }
    found = {"Prediction": prediction, "Version": version, "Model": model, "File": file}
    for name in list(found):
        found[f"{name}Page"] = {
            "type": "object",
            "required": ["next", "previous", "results"],
            "properties": {
                "next": nullable(_URL),
                "previous": nullable(_URL),
                "results": {"type": "array", "items": ref(name)},
            },
        }
    found["Error"] = {"type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}}
    return found


def json_response(description: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}, **extra}


def error_responses(codes: list[int]) -> dict[str, Any]:
    responses = {}
    for code in codes:
        extra = {"headers": _RETRY_AFTER} if code in (429, 503) else {}
        responses[str(code)] = json_response(_STATUS_TEXT[code], ref("Error"), **extra)
    return responses


def path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def header(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
    }


LIST_PARAMETERS = [
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


def operation(
    operation_id: str,
    summary: str,
    responses: dict[str, Any],
    errors: list[int],
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    body_required: bool = True,
    media_type: str = "application/json",
) -> dict[str, Any]:
    found: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "responses": {**responses, **error_responses(errors)},
    }
    if parameters:
        found["parameters"] = parameters
    if body is not None:
        found["requestBody"] = {"required": body_required, "content": {media_type: {"schema": body}}}
    return found


def _prediction_links() -> dict[str, Any]:
    by_id = {"id": "$response.body#/id"}
    return {
        "GetPrediction": {"operationId": "getPrediction", "parameters": by_id},
        "CancelPrediction": {"operationId": "cancelPrediction", "parameters": by_id},
    }


def create_body(input_schema: dict[str, Any], *, with_version: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "input": input_schema,
        "webhook": {"type": "string", "format": "uri", "description": "an allowed host only"},
        "webhook_events_filter": {
            "type": "array",
            "items": {"type": "string", "enum": ["start", "output", "logs", "completed"]},
        },
        "stream": {"type": "boolean", "description": "true is answered 501: no model here streams"},
    }
    required = ["input"]
    if with_version:
        properties["version"] = {
            "type": "string",
            "description": "a version id, or owner/name, or owner/name:version id",
        }
        required.append("version")
    return {"type": "object", "required": required, "properties": properties}


def create_operation(
    operation_id: str,
    summary: str,
    description: str,
    input_schema: dict[str, Any],
    *,
    with_version: bool,
    errors: list[int],
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    created = json_response("created", ref("Prediction"), links=_prediction_links())
    found = operation(
        operation_id,
        summary,
        {"201": created},
        errors,
        parameters=[
            *(parameters or []),
            header("Prefer", "wait or wait=N: hold the answer until done, up to N s (at most 60)"),
            header("Cancel-After", "e.g. 30s or 5m: fail the prediction if it has not started by then"),
        ],
        body=create_body(input_schema, with_version=with_version),
    )
    found["description"] = description
    return found


def shared_paths(create_errors: list[int], file_links: dict[str, Any]) -> dict[str, Any]:
    """The routes every server of ours has, with the statuses this server answers on them."""
    model_params = [path_param("owner"), path_param("name")]
    prediction = json_response("the prediction", ref("Prediction"), links=_prediction_links())
    return {
        "/v1/models": {
            "get": operation(
                "listModels",
                "The models, newest version first (models.list)",
                {"200": json_response("a page of models", ref("ModelPage"))},
                LIST_ERRORS,
                parameters=LIST_PARAMETERS,
            )
        },
        "/v1/models/{owner}/{name}": {
            "get": operation(
                "getModel",
                "A model with its latest version, run count and default example (models.get)",
                {"200": json_response("the model", ref("Model"))},
                [401, 404],
                parameters=model_params,
            )
        },
        "/v1/models/{owner}/{name}/versions": {
            "get": operation(
                "listVersions",
                "The model's versions this server knows, newest first (model.versions.list)",
                {"200": json_response("a page of versions", ref("VersionPage"))},
                [*LIST_ERRORS, 404],
                parameters=[*model_params, *LIST_PARAMETERS],
            )
        },
        "/v1/models/{owner}/{name}/versions/{version}": {
            "get": operation(
                "getVersion",
                "One version, with the input schema (versions.get)",
                {"200": json_response("the version", ref("Version"))},
                [401, 404],
                parameters=[*model_params, path_param("version")],
            )
        },
        "/v1/predictions": {
            "get": operation(
                "listPredictions",
                "Predictions, newest first (predictions.list)",
                {"200": json_response("a page of predictions", ref("PredictionPage"))},
                LIST_ERRORS,
                parameters=LIST_PARAMETERS,
            ),
            "post": create_operation(
                "createPrediction",
                "Create a prediction of a model version (predictions.create(version=...))",
                "",
                {"type": "object"},
                with_version=True,
                errors=create_errors,
            ),
        },
        "/v1/predictions/{id}": {
            "get": operation(
                "getPrediction",
                "A prediction (predictions.get, reload, wait)",
                {"200": prediction},
                [401, 404],
                parameters=[path_param("id")],
            )
        },
        "/v1/predictions/{id}/cancel": {
            "post": operation(
                "cancelPrediction",
                "Cancel: queued work never runs; a running batch's result is discarded (cancel)",
                {"200": json_response("the prediction", ref("Prediction"))},
                [401, 404],
                parameters=[path_param("id")],
            )
        },
        "/v1/files": {
            "get": operation(
                "listFiles",
                "Uploaded files still kept, newest first (files.list)",
                {"200": json_response("a page of files", ref("FilePage"))},
                LIST_ERRORS,
                parameters=LIST_PARAMETERS,
            ),
            "post": operation(
                "createFile",
                "Upload a file, kept an hour; its urls.get can be an input (files.create)",
                {"201": json_response("the file", ref("File"), links=file_links)},
                [400, 401, 413, 415, 422],
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
        },
        "/v1/files/{id}": {
            "get": operation(
                "getFile",
                "An uploaded file (files.get)",
                {"200": json_response("the file", ref("File"))},
                [401, 404],
                parameters=[path_param("id")],
            ),
            "delete": operation(
                "deleteFile",
                "Delete an uploaded file (files.delete)",
                {"204": {"description": "deleted"}},
                [401, 404],
                parameters=[path_param("id")],
            ),
        },
    }


def file_link(operation_id: str, field: str, **parameters: str) -> dict[str, Any]:
    """After an upload, a prediction that takes the file by its URL."""
    link: dict[str, Any] = {
        "operationId": operation_id,
        "requestBody": {"input": {field: "$response.body#/urls/get"}},
    }
    if parameters:
        link["parameters"] = parameters
    return {"PredictWithFile": link}


def probe_paths() -> dict[str, Any]:
    status = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}
    unauthenticated: list[dict[str, list[str]]] = [{}]
    paths = {
        "/healthz": {"get": operation("healthz", "Alive", {"200": json_response("alive", status)}, [])},
        "/readyz": {
            "get": operation("readyz", "Every model loaded", {"200": json_response("ready", status)}, [503])
        },
        "/metrics": {
            "get": operation(
                "metrics",
                "Prometheus metrics",
                {"200": {"description": "the metrics", "content": {"text/plain": {"schema": _TEXT}}}},
                [],
            )
        },
    }
    for methods in paths.values():
        methods["get"]["security"] = unauthenticated
    return paths

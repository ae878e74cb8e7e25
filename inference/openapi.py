"""The API described as OpenAPI, from the same input schemas the server validates with."""

from __future__ import annotations

from html import escape
from typing import Any

from inference.manifest import Manifest

COG_VERSION = "0.23.1"  # the Cog API shape we follow; the replicate client requires the field
_ERROR = {"description": "{\"detail\": \"...\"} naming the problem",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def version_json(manifest: Manifest) -> dict[str, Any]:
    """A model version as Replicate shows it: its id, and its schema in Cog's OpenAPI form."""
    return {
        "id": manifest.version,
        "created_at": None,
        "cog_version": COG_VERSION,
        "openapi_schema": {
            "openapi": "3.0.2",
            "info": {"title": manifest.title, "version": manifest.version[:12]},
            "paths": {},
            "components": {"schemas": {"Input": manifest.schema.json_schema(), "Output": {"title": "Output"}}},
        },
    }


def openapi_spec(manifests: list[Manifest], owner: str) -> dict[str, Any]:
    """The whole server: one create route per model, with that model's input schema."""
    schemas: dict[str, Any] = {
        "Prediction": {"type": "object", "required": ["id", "status"], "properties": {
            "id": {"type": "string"}, "model": {"type": "string"}, "version": {"type": "string"},
            "input": {"type": "object"}, "output": {}, "error": {"type": "string", "nullable": True},
            "logs": {"type": "string"},
            "status": {"type": "string", "enum": ["starting", "processing", "succeeded", "failed", "canceled"]},
            "created_at": {"type": "string"}, "started_at": {"type": "string", "nullable": True},
            "completed_at": {"type": "string", "nullable": True},
            "metrics": {"type": "object", "properties": {"predict_time": {"type": "number"}}},
            "urls": {"type": "object", "properties": {"get": {"type": "string"}, "cancel": {"type": "string"}}},
        }},
        "Error": {"type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}},
    }
    prediction = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Prediction"}}}}
    errors = {str(code): _ERROR for code in (400, 401, 404, 413, 415, 422, 429, 503)}
    paths: dict[str, Any] = {}
    for m in manifests:
        input_name = f"{m.name}_input"
        schemas[input_name] = m.schema.json_schema()
        paths[f"/v1/models/{owner}/{m.name}/predictions"] = {"post": {
            "summary": m.title,
            "description": m.description,
            "parameters": [_header("Prefer", "wait or wait=N: hold the answer until done, up to N s"),
                           _header("Cancel-After", "e.g. 30s or 5m: fail the prediction if it has not "
                                   "started by then")],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["input"],
                "properties": {"input": {"$ref": f"#/components/schemas/{input_name}"}}}}}},
            "responses": {"201": {"description": "created", **prediction}, **errors},
        }}
    paths["/v1/predictions/{id}"] = {
        "get": {"summary": "A prediction", "parameters": [_path("id")],
                "responses": {"200": {"description": "the prediction", **prediction}, "404": _ERROR}},
        "put": {"summary": "Create with the client's id (safe to retry)", "parameters": [_path("id")],
                "responses": {"201": {"description": "created", **prediction},
                              "200": {"description": "already exists", **prediction}, **errors}},
    }
    paths["/v1/predictions/{id}/cancel"] = {"post": {
        "summary": "Cancel: queued work never runs; a running batch's result is discarded",
        "parameters": [_path("id")], "responses": {"200": {"description": "the prediction", **prediction}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "modelfolio inference API", "version": "1",
                 "description": "A subset of Replicate's HTTP API. Every /v1 route needs "
                                "Authorization: Bearer <INFERENCE_TOKEN>."},
        "components": {"schemas": schemas,
                       "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}},
        "security": [{"token": []}],
        "paths": paths,
    }


def _header(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": {"type": "string"}}


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def docs_html(spec: dict[str, Any]) -> str:
    """A plain page of the API, read from the same spec: every route, and each model's inputs."""
    rows = []
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            inputs = ""
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            ref = body.get("schema", {}).get("properties", {}).get("input", {}).get("$ref")
            if ref:
                schema = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
                inputs = "".join(
                    f"<li><code>{escape(name)}</code> ({escape(str(p.get('type')))}"
                    f"{', required' if name in schema.get('required', []) else ''})"
                    f" {escape(str(p.get('description', '')))}</li>"
                    for name, p in schema["properties"].items())
                inputs = f"<ul>{inputs}</ul>"
            rows.append(f"<h2><code>{method.upper()} {escape(path)}</code></h2>"
                        f"<p>{escape(operation.get('summary', ''))}</p>{inputs}")
    info = spec["info"]
    return (f"<!doctype html><html lang=en><meta charset=utf-8><title>{escape(info['title'])}</title>"
            f"<h1>{escape(info['title'])}</h1><p>{escape(info['description'])} "
            f"Machine-readable: <a href=/openapi.json>/openapi.json</a>.</p>{''.join(rows)}</html>")

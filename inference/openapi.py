"""The API described as OpenAPI, from the same input schemas the server validates with."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from inference import openapi_parts as parts
from inference.manifest import Manifest

COG_VERSION = "0.23.1"  # the Cog API shape we follow; the replicate client requires the field


def version_json(manifest: Manifest) -> dict[str, Any]:
    """A model version as Replicate shows it: its id, and its schema in Cog's OpenAPI form."""
    return {
        "id": manifest.version,
        "created_at": created_at_of(manifest),
        "cog_version": COG_VERSION,
        "openapi_schema": {
            "openapi": "3.0.2",
            "info": {"title": manifest.title, "version": manifest.version[:12]},
            "paths": {},
            "components": {
                "schemas": {"Input": manifest.schema.json_schema(), "Output": {"title": "Output"}}
            },
        },
    }


def created_at_of(manifest: Manifest) -> str:
    """When the version came to be: the newest change to the files of its folder."""
    return _created_at(manifest.folder, manifest.version)


@functools.cache
def _created_at(folder: Path, version: str) -> str:
    # Keyed by version too: a reload that brings new files brings a new version and a new time.
    times = [
        path.stat().st_mtime
        for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]
    moment = datetime.fromtimestamp(max(times, default=0.0), UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def openapi_spec(manifests: list[Manifest], owner: str) -> dict[str, Any]:
    """The whole server: the shared routes, and one create route per model with its input schema."""
    schemas = parts.schemas()
    paths: dict[str, Any] = {}
    for m in manifests:
        input_name = f"{m.name}_input"
        schemas[input_name] = m.schema.json_schema()
        paths[f"/v1/models/{owner}/{m.name}/predictions"] = {
            "post": parts.create_operation(
                f"create_{m.name}",
                m.title,
                m.description,
                {"$ref": f"#/components/schemas/{input_name}"},
                with_version=False,
                errors=parts.CREATE_ERRORS,
            )
        }
    image_models = [(m, f.name) for m in manifests for f in m.schema.fields if f.is_file]
    links = parts.file_link(f"create_{image_models[0][0].name}", image_models[0][1]) if image_models else {}
    paths.update(parts.shared_paths(parts.CREATE_ERRORS, links))
    paths["/v1/admin/models/{name}/reload"] = {
        "post": parts.operation(
            "reloadModel",
            "Load the model folder as it is now, without dropping a request",
            {"200": parts.json_response("what changed", {"type": "object"})},
            [400, 401, 404, 415, 422],
            parameters=[parts.path_param("name")],
            body={"type": "object", "properties": {"canary_weight": {"type": "number"}}},
            body_required=False,
        )
    }
    paths["/v1/admin/models/{name}/promote"] = {
        "post": parts.operation(
            "promoteModel",
            "Make a loaded version the one that serves the model",
            {"200": parts.json_response("the model and its version", {"type": "object"})},
            [400, 401, 404, 415],
            parameters=[parts.path_param("name")],
            body={"type": "object", "required": ["version"], "properties": {"version": {"type": "string"}}},
        )
    }
    paths.update(parts.probe_paths())
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "modelfolio inference API",
            "version": "1",
            "description": "A subset of Replicate's HTTP API. Every /v1 route needs "
            "Authorization: Bearer <INFERENCE_TOKEN>. " + parts.NOT_OFFERED_NOTE,
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"token": []}],
        "paths": paths,
    }


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
                    for name, p in schema["properties"].items()
                )
                inputs = f"<ul>{inputs}</ul>"
            rows.append(
                f"<h2><code>{method.upper()} {escape(path)}</code></h2>"
                f"<p>{escape(operation.get('summary', ''))}</p>{inputs}"
            )
    info = spec["info"]
    return (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>{escape(info['title'])}</title>"
        f"<h1>{escape(info['title'])}</h1><p>{escape(info['description'])} "
        f"Machine-readable: <a href=/openapi.json>/openapi.json</a>.</p>{''.join(rows)}</html>"
    )

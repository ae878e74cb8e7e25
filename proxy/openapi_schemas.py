"""The objects the proxy answers with, as OpenAPI schemas: Replicate's shapes, as its official
clients validate them, plus what the proxy adds (billing, usage). Used by proxy/openapi.py."""

from __future__ import annotations

from typing import Any


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


TIME = {"type": "string", "format": "date-time"}
URL = {"type": "string", "format": "uri"}
TEXT = {"type": "string"}
STATUSES = ["starting", "processing", "succeeded", "failed", "canceled"]
_MONEY = {"type": "string", "description": "an exact decimal, USD", "pattern": r"^\d+(\.\d+)?$"}


def _prediction() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["id", "model", "version", "status", "input", "created_at"],
        "properties": {
            "id": TEXT,
            "model": {"type": "string", "description": "owner/name"},
            "version": TEXT,
            "input": {"type": "object", "description": "data URLs over 256 characters are shortened"},
            "output": {"description": "the model's output (JSON); files as data URLs"},
            "error": nullable(TEXT),
            "logs": nullable(TEXT),
            "status": {"type": "string", "enum": STATUSES},
            "created_at": TIME,
            "started_at": nullable(TIME),
            "completed_at": nullable(TIME),
            "metrics": {
                "type": "object",
                "properties": {
                    "predict_time": {"type": "number", "description": "seconds"},
                    "predict_time_ms": {"type": "integer", "description": "what was billed"},
                },
            },
            "urls": {
                "type": "object",
                "description": "no cancel on a result someone else made public (PUBLIC_RESULTS)",
                "required": ["get"],
                "properties": {"get": URL, "cancel": URL},
            },
            "billing": {
                "type": "object",
                "description": "present once a succeeded prediction is billed",
                "required": ["amount", "currency", "billed_to"],
                "properties": {
                    "amount": _MONEY,
                    "currency": {"type": "string", "enum": ["usd"]},
                    "billed_to": {"type": "string", "enum": ["customer", "demo"]},
                },
            },
            "data_removed": {
                "type": "boolean",
                "description": "true when the output is no longer kept (the model server forgot it)",
            },
        },
    }


def _model() -> dict[str, Any]:
    return {
        "type": "object",
        "required": [
            *("url", "owner", "name", "description", "visibility", "github_url", "paper_url"),
            *("license_url", "run_count", "cover_image_url", "default_example", "latest_version"),
        ],
        "properties": {
            "url": URL,
            "owner": TEXT,
            "name": TEXT,
            "description": nullable(TEXT),
            "visibility": {"type": "string", "enum": ["public", "private"]},
            "github_url": nullable(URL),
            "paper_url": nullable(URL),
            "license_url": nullable(URL),
            "run_count": {
                "type": "integer",
                "minimum": 0,
                "description": "predictions made through this API",
            },
            "cover_image_url": nullable({**URL, "description": "a picture this API serves"}),
            "default_example": nullable({**ref("Prediction"), "description": "a real run of an example"}),
            "latest_version": nullable(ref("Version")),
            "price_per_second": {**_MONEY, "description": "USD per second of predict_time"},
            "hardware": TEXT,
        },
    }


def _version() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["id", "created_at", "cog_version", "openapi_schema"],
        "properties": {
            "id": TEXT,
            "created_at": TIME,
            "cog_version": TEXT,
            "openapi_schema": {"type": "object", "description": "components.schemas.Input is the input"},
        },
    }


def _file() -> dict[str, Any]:
    return {
        "type": "object",
        "required": [
            *("id", "name", "content_type", "size", "etag"),
            *("checksums", "metadata", "created_at", "urls"),
        ],
        "properties": {
            "id": TEXT,
            "name": TEXT,
            "content_type": TEXT,
            "size": {"type": "integer", "minimum": 0},
            "etag": TEXT,
            "checksums": {"type": "object", "properties": {"sha256": TEXT}},
            "metadata": {"type": "object"},
            "created_at": TIME,
            "expires_at": nullable(TIME),
            "urls": {"type": "object", "required": ["get"], "properties": {"get": URL}},
        },
    }


def _totals(*, by_model: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "predictions": {"type": "integer", "minimum": 0},
        "predict_time_ms": {"type": "integer", "minimum": 0},
        "amount": {**_MONEY, "description": "rounded half-up to the cent"},
        "amount_exact": _MONEY,
    }
    if by_model:
        properties["currency"] = {"type": "string", "enum": ["usd"]}
        properties["by_model"] = {"type": "object", "additionalProperties": _totals(by_model=False)}
        properties["demo"] = {
            "type": "object",
            "description": "anonymous visitors only: the daily demo quota",
            "required": ["daily_quota", "used_today", "remaining_today", "resets_in_s"],
            "properties": {
                name: {"type": "integer", "minimum": 0}
                for name in ("daily_quota", "used_today", "remaining_today", "resets_in_s")
            },
        }
    return {"type": "object", "required": list(properties)[:4], "properties": properties}


def schemas() -> dict[str, Any]:
    found = {"Prediction": _prediction(), "Version": _version(), "Model": _model(), "File": _file()}
    for name in list(found):
        found[f"{name}Page"] = {
            "type": "object",
            "required": ["next", "previous", "results"],
            "properties": {
                "next": nullable(URL),
                "previous": nullable(URL),
                "results": {"type": "array", "items": ref(name)},
            },
        }
    found["Usage"] = _totals(by_model=True)
    found["Usage"]["properties"]["spend_caps"] = ref("SpendCaps")
    money = {"type": "string", "pattern": r"^\d+\.\d\d$"}
    found["SpendCaps"] = {
        "type": "array",
        "description": "customers only: this month's caps, what was spent and what is left",
        "items": {
            "type": "object",
            "required": ["scope", "set_by", "monthly", "period", "spent", "remaining"],
            "properties": {
                "scope": {"type": "string", "enum": ["key", "customer"]},
                "set_by": {"type": "string", "enum": ["owner", "customer"]},
                "monthly": money,
                "period": {"type": "string", "description": "the UTC month, e.g. 2025-06"},
                "spent": money,
                "remaining": money,
            },
        },
    }
    found["RotatedKey"] = {
        "type": "object",
        "required": ["id", "key", "previous_key", "previous_key_expires_at"],
        "properties": dict.fromkeys(("id", "key", "previous_key", "previous_key_expires_at"), TEXT),
    }
    found["Error"] = {"type": "object", "required": ["detail"], "properties": {"detail": TEXT}}
    return found

"""The proxy over real HTTP on 127.0.0.1, in front of a fake inference server: a tiny Starlette app
that keeps the inference server's contract and records what it was sent."""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from proxy import Config, Secrets, create_app
from proxy.auth import hash_key, new_api_key
from proxy.ledger import Ledger
from proxy.storage import open_database
from tests.support.inference import TOKEN
from tests.support.servers import serve

IMAGE = {"image": "data:image/png;base64,iVBORw0KGgo="}


PRICE = "0.0005"


@dataclass
class FakeInference:
    """Keeps the inference server's contract. `predict_time` is what a succeeded prediction
    reports; `final_status` is where every prediction ends."""

    predict_time: float = 0.0125
    final_status: str = "succeeded"
    price: str | None = PRICE
    seen: list[dict[str, Any]] = field(default_factory=list)
    model_fetches: int = 0
    _predictions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/models/{owner}/{name}/predictions", self.create, methods=["POST"]),
                Route("/v1/predictions", self.create, methods=["POST"]),
                Route("/v1/predictions/{id}", self.get, methods=["GET"]),
                Route("/v1/predictions/{id}", self.put, methods=["PUT"]),
                Route("/v1/predictions/{id}/cancel", self.cancel, methods=["POST"]),
                Route("/v1/models/{owner}/{name}", self.model, methods=["GET"]),
                Route("/v1/models/{owner}/{name}/versions/{id}", self.model, methods=["GET"]),
                Route("/readyz", lambda request: JSONResponse({"status": "ready"})),
            ]
        )

    async def _note(self, request: Request) -> Response | None:
        body = await request.body()
        self.seen.append(
            {
                "method": request.method,
                "path": request.url.path,
                "headers": dict(request.headers),
                "body": body,
            }
        )
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"detail": "missing or wrong inference token"}, status_code=401)
        return None

    async def create(self, request: Request) -> Response:
        if refused := await self._note(request):
            return refused
        try:
            body = json.loads(self.seen[-1]["body"])
        except ValueError:
            return JSONResponse({"detail": "the body is not valid JSON"}, status_code=400)
        named = (
            str(body.get("version")).split(":")[0] if "/" in str(body.get("version")) else "modelfolio/digits"
        )
        owner, name = (
            request.path_params.get("owner", named.split("/")[0]),
            request.path_params.get("name", named.split("/")[1]),
        )
        prediction_id = f"pred{len(self._predictions):04d}x"
        self._predictions[prediction_id] = {
            "id": prediction_id,
            "model": f"{owner}/{name}",
            "version": "v1abc",
            "input": body.get("input"),
            "created_at": "2025-06-01T12:00:00Z",
            "urls": {
                "get": f"http://upstream.internal/v1/predictions/{prediction_id}",
                "cancel": f"http://upstream.internal/v1/predictions/{prediction_id}/cancel",
            },
        }
        waited = request.headers.get("prefer", "").startswith("wait")
        return JSONResponse(self._state(prediction_id, done=waited), status_code=201)

    async def put(self, request: Request) -> Response:
        """Create with the caller's id, once; asked again, the prediction as it is (as the
        inference server's PUT /v1/predictions/{id} does)."""
        if refused := await self._note(request):
            return refused
        prediction_id = request.path_params["id"]
        waited = request.headers.get("prefer", "").startswith("wait")
        if prediction_id in self._predictions:
            return JSONResponse(self._state(prediction_id, done=True), status_code=200)
        body = json.loads(self.seen[-1]["body"])
        model = body.get("version") if "/" in str(body.get("version")) else "modelfolio/digits"
        self._predictions[prediction_id] = {
            "id": prediction_id,
            "model": model,
            "version": "v1abc",
            "input": body.get("input"),
            "created_at": "2025-06-01T12:00:00Z",
        }
        return JSONResponse(self._state(prediction_id, done=waited), status_code=201)

    async def get(self, request: Request) -> Response:
        if refused := await self._note(request):
            return refused
        if request.path_params["id"] not in self._predictions:
            return JSONResponse({"detail": "prediction not found"}, status_code=404)
        return JSONResponse(self._state(request.path_params["id"], done=True))

    async def cancel(self, request: Request) -> Response:
        if refused := await self._note(request):
            return refused
        return JSONResponse({**self._state(request.path_params["id"], done=False), "status": "canceled"})

    async def model(self, request: Request) -> Response:
        if refused := await self._note(request):
            return refused
        self.model_fetches += 1
        owner, name = request.path_params["owner"], request.path_params["name"]
        return JSONResponse(
            {
                "url": str(request.url),
                "owner": owner,
                "name": name,
                "price_per_second": self.price,
                "latest_version": {"id": "v1abc", "openapi_schema": {}},
            }
        )

    def _state(self, prediction_id: str, *, done: bool) -> dict[str, Any]:
        prediction = dict(self._predictions[prediction_id])
        if not done:
            return {**prediction, "status": "starting", "output": None, "metrics": {}}
        succeeded = self.final_status == "succeeded"
        return {
            **prediction,
            "status": self.final_status,
            "output": {"label": "7", "confidence": 0.98} if succeeded else None,
            "error": None if succeeded else "the image could not be read",
            "metrics": {"predict_time": self.predict_time},
        }


def answering(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Starlette:
    """An upstream that gives every request the same answer."""

    async def handle(request: Request) -> Response:
        return JSONResponse(body, status_code=status, headers=headers)

    return Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST"])])


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def proxy_config(tmp_path: Path, upstream_url: str, **overrides: Any) -> Config:
    settings: dict[str, Any] = {
        "owner": "modelfolio",
        "upstream_url": upstream_url,
        "public_origin": "http://127.0.0.1:8000",
        "site_dir": tmp_path / "dist",
        "ledger_path": tmp_path / "ledger.sqlite3",
        "demo_daily_quota": 50,
        "secrets": Secrets(inference_token=TOKEN),
        **overrides,
    }
    return Config(**settings)


@contextlib.contextmanager
def proxy_in_front_of(upstream: Starlette | str, tmp_path: Path, **overrides: Any) -> Iterator[httpx.Client]:
    with contextlib.ExitStack() as stack:
        upstream_url = upstream if isinstance(upstream, str) else stack.enter_context(serve(upstream))
        config = proxy_config(tmp_path, upstream_url, **overrides)
        base_url = stack.enter_context(serve(create_app(config)))
        yield stack.enter_context(httpx.Client(base_url=base_url, timeout=30))


def issue_key(tmp_path: Path, customer: str, database_url: str | None = None) -> str:
    """A new API key of `customer`'s, in the test's SQLite ledger or the database at `database_url`."""
    database = open_database(database_url or f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    key_id, key = new_api_key()
    Ledger(database).add_api_key(key_id, hash_key(key), customer, "2025-06-01T00:00:00.000000+00:00")
    database.close()
    return key


def ledger_rows(tmp_path: Path, table: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(tmp_path / "ledger.sqlite3")) as db:
        return db.execute(f"SELECT * FROM {table}").fetchall()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def predict(
    client: httpx.Client, headers: dict[str, str] | None = None, *, wait: bool = True
) -> httpx.Response:
    extra = {"Prefer": "wait"} if wait else {}
    return client.post(
        "/v1/models/modelfolio/digits/predictions",
        json={"input": IMAGE},
        headers={**extra, **(headers or {})},
    )

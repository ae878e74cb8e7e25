"""Models as a caller sees them through the proxy: the model server's model objects with what
only the proxy knows added (`models.get`, `models.list`, `model.versions.list`, `versions.get`).

- `run_count`: predictions created through this proxy, by everyone, from the ledger (it
  survives restarts of either server).
- `cover_image_url`: a picture the proxy serves from the built site: the model's cover
  (`models/<name>/cover.*`, which build.py writes) or, while a site has none, its first example
  picture (`models/<name>/examples/`).
- URLs under the model server's address move to the proxy's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from proxy import pages
from proxy.forward import hide_upstream, segment
from proxy.gateway import Gateway, gateway_of, origin

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")


def cover_path(site_dir: Path, name: str) -> str | None:
    """The model's picture, as a path under the site's root, or None."""
    folder = site_dir / "models" / name
    covers = sorted(p for p in folder.glob("cover.*") if p.suffix.lower() in IMAGE_SUFFIXES)
    examples = sorted(p for p in (folder / "examples").glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    chosen = next(iter(covers or examples), None)
    return None if chosen is None else "/" + chosen.relative_to(site_dir).as_posix()


def _shown(gateway: Gateway, request: Request, model: Any, runs: dict[str, int]) -> Any:
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        return hide_upstream(model, gateway.config.upstream_url, origin(request))
    gateway.billing.remember_model(f"{model.get('owner')}/{model['name']}", model)
    model = {**model, "run_count": runs.get(f"{model.get('owner')}/{model['name']}", 0)}
    picture = cover_path(gateway.config.site_dir, segment(model["name"], "model"))
    model["cover_image_url"] = None if picture is None else origin(request) + picture
    return hide_upstream(model, gateway.config.upstream_url, origin(request))


def _model_path(request: Request) -> str:
    owner = segment(request.path_params["owner"], "model")
    name = segment(request.path_params["name"], "model")
    return f"/v1/models/{owner}/{name}"


async def get_model(request: Request) -> Response:
    gateway = gateway_of(request)
    await gateway.identify(request)
    reply = await gateway.upstream.send("GET", _model_path(request))
    if not reply.ok:
        return reply.passthrough()
    runs = await to_thread.run_sync(gateway.ledger.run_counts)
    return JSONResponse(_shown(gateway, request, reply.json(), runs))


async def list_models(request: Request) -> Response:
    gateway = gateway_of(request)
    await gateway.identify(request)
    reply = await gateway.upstream.send("GET", "/v1/models" + pages.forwarded_query(request))
    if not reply.ok:
        return reply.passthrough()
    page = reply.json()
    if isinstance(page, dict) and isinstance(page.get("results"), list):
        runs = await to_thread.run_sync(gateway.ledger.run_counts)
        page = {**page, "results": [_shown(gateway, request, m, runs) for m in page["results"]]}
    return JSONResponse(hide_upstream(page, gateway.config.upstream_url, origin(request)))


async def list_versions(request: Request) -> Response:
    gateway = gateway_of(request)
    await gateway.identify(request)
    path = _model_path(request) + "/versions" + pages.forwarded_query(request)
    reply = await gateway.upstream.send("GET", path)
    if not reply.ok:
        return reply.passthrough()
    return JSONResponse(hide_upstream(reply.json(), gateway.config.upstream_url, origin(request)))


async def get_version(request: Request) -> Response:
    gateway = gateway_of(request)
    await gateway.identify(request)
    path = f"{_model_path(request)}/versions/{segment(request.path_params['id'], 'version')}"
    reply = await gateway.upstream.send("GET", path)
    if not reply.ok:
        return reply.passthrough()
    return JSONResponse(hide_upstream(reply.json(), gateway.config.upstream_url, origin(request)))


ROUTES = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{owner}/{name}", get_model, methods=["GET"]),
    Route("/v1/models/{owner}/{name}/versions", list_versions, methods=["GET"]),
    Route("/v1/models/{owner}/{name}/versions/{id}", get_version, methods=["GET"]),
]

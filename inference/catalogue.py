"""What the server offers, as Replicate's clients read it: models (with their versions and a
default example), and the list pages of models, versions, predictions and uploaded files.

Everything here is known to this process only: under Ray Serve each replica lists its own
predictions and uploads (README, "Scale and speed").
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from inference import pages
from inference.errors import NotFound
from inference.files import data_url_of
from inference.manifest import Manifest
from inference.openapi import created_at_of, version_json
from inference.predictions import Prediction, new_id
from inference.uploads import Upload

if TYPE_CHECKING:
    from inference.registry import Models


def example_prediction(manifest: Manifest, owner: str, output: Any, seconds: float) -> Prediction | None:
    """The model's default example: its manifest's first example, really run (see
    Batcher.warm_up). None when that example failed: a failure is no example."""
    if isinstance(output, BaseException) or not manifest.examples:
        return None
    given = manifest.examples[0].input
    # File inputs as data URLs, in full, so that the example's input can be sent as it is.
    inputs = {
        name: data_url_of(manifest.folder / value) if manifest.schema.field(name).is_file else value
        for name, value in given.items()
    }
    prediction = Prediction(
        id=new_id(), model=f"{owner}/{manifest.name}", version=manifest.version, input=inputs
    )
    prediction.start()
    prediction.finish("succeeded", output=output, predict_time=seconds)
    return prediction


def model_json(
    manifest: Manifest, owner: str, base: str, *, runs: int = 0, example: Prediction | None = None
) -> dict[str, Any]:
    return {
        "url": f"{base}/v1/models/{owner}/{manifest.name}",
        "owner": owner,
        "name": manifest.name,
        "description": manifest.description,
        "visibility": "public" if manifest.listed else "private",
        "github_url": None,
        "paper_url": None,
        "license_url": None,
        "run_count": runs,
        "cover_image_url": None,  # the proxy serves the site's pictures; this server has none
        "default_example": None if example is None else example_json(example),
        "latest_version": version_json(manifest),
        "price_per_second": str(manifest.price_per_second),
        "hardware": manifest.hardware,
    }


def example_json(example: Prediction) -> dict[str, Any]:
    # No `urls`: an example lives with its model version, not among predictions one can GET.
    record = example.to_json("")
    del record["urls"]
    return {**record, "input": example.input}


def runs_of(request: Request) -> Counter[str]:
    """Predictions created on this server since it started, per model name."""
    runs: Counter[str] = request.app.state.runs
    return runs


def _models(request: Request) -> Models:
    models: Models = request.app.state.models
    return models


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def model_of(request: Request, manifest: Manifest) -> dict[str, Any]:
    models = _models(request)
    return model_json(
        manifest,
        models.settings.owner,
        _base(request),
        runs=runs_of(request)[manifest.name],
        example=models.examples.get(manifest.version),
    )


async def get_model(request: Request) -> Response:
    models = _models(request)
    manifest = models.manifest(request.path_params["owner"], request.path_params["name"])
    return JSONResponse(model_of(request, manifest))


async def list_models(request: Request) -> Response:
    manifests = list(_models(request).manifests.values())
    return JSONResponse(
        pages.page(request, manifests, lambda m: (created_at_of(m), m.name), lambda m: model_of(request, m))
    )


def versions_of(models: Models, manifest: Manifest) -> list[Manifest]:
    """Every version of the model this server knows: the one it serves and any loaded beside
    it (a canary, or one still finishing its work)."""
    found = {manifest.version: manifest}
    for batcher in models.versions.values():
        if batcher.model.manifest.name == manifest.name:
            found.setdefault(batcher.model.manifest.version, batcher.model.manifest)
    return list(found.values())


async def list_versions(request: Request) -> Response:
    models = _models(request)
    manifest = models.manifest(request.path_params["owner"], request.path_params["name"])
    versions = versions_of(models, manifest)
    return JSONResponse(pages.page(request, versions, lambda m: (created_at_of(m), m.version), version_json))


async def get_version(request: Request) -> Response:
    models = _models(request)
    manifest = models.manifest(request.path_params["owner"], request.path_params["name"])
    for known in versions_of(models, manifest):
        if known.version == request.path_params["version"]:
            return JSONResponse(version_json(known))
    raise NotFound(f"model {manifest.name} has no version {request.path_params['version']!r}")


async def list_predictions(request: Request) -> Response:
    base = _base(request)
    return JSONResponse(
        pages.page(
            request,
            _models(request).store.all(),
            lambda p: (p.created_at, p.id),
            lambda p: p.to_json(base),
        )
    )


async def list_files(request: Request) -> Response:
    uploads = _models(request).uploads
    base = _base(request)

    def key(upload: Upload) -> pages.Key:
        return upload.to_json(base, uploads.ttl_s)["created_at"], upload.id

    return JSONResponse(
        pages.page(request, await uploads.all(), key, lambda upload: upload.to_json(base, uploads.ttl_s))
    )

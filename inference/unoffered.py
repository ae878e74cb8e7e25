"""Replicate API calls that do not apply to a portfolio of image models: each answers 501 with a
detail that names what is not offered, never a bare 404 or 405 that would send a caller looking
for a typo.

proxy/unoffered.py holds the same table: the two servers deploy apart, and tests/stack/test_stack.py
checks that a client meets the same refusals from either."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from inference.errors import NotOffered

# (path, methods, what is not offered). Paths are Replicate's; methods are those its clients use.
NOT_OFFERED: list[tuple[str, list[str], str]] = [
    ("/v1/trainings", ["GET", "POST"], "trainings (fine-tuning)"),
    ("/v1/trainings/{rest:path}", ["GET", "POST"], "trainings (fine-tuning)"),
    ("/v1/models/{owner}/{name}/versions/{version}/trainings", ["POST"], "trainings (fine-tuning)"),
    ("/v1/deployments", ["GET", "POST"], "deployments"),
    ("/v1/deployments/{rest:path}", ["GET", "POST", "PATCH", "DELETE"], "deployments"),
    ("/v1/hardware", ["GET"], "a choice of hardware"),
    ("/v1/collections", ["GET"], "collections"),
    ("/v1/collections/{rest:path}", ["GET"], "collections"),
    ("/v1/account", ["GET"], "accounts"),
    ("/v1/webhooks/default/secret", ["GET"], "a webhook signing secret for callers"),
    ("/v1/search", ["GET", "QUERY"], "search"),
    ("/v1/models", ["POST"], "creating models (a model here is a folder the owner ships)"),
    ("/v1/models", ["QUERY"], "search"),
    ("/v1/models/{owner}/{name}", ["PATCH", "DELETE"], "changing or deleting models"),
    ("/v1/models/{owner}/{name}/versions/{version}", ["DELETE"], "deleting model versions"),
    ("/v1/models/{owner}/{name}/readme", ["GET"], "model READMEs"),
    ("/v1/models/{owner}/{name}/examples", ["GET"], "an examples list (see the model's default_example)"),
]


def _refuse(what: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        raise NotOffered(f"{what} is not offered here: this API serves its owner's image models only")

    return endpoint


def routes() -> list[BaseRoute]:
    return [Route(path, _refuse(what), methods=methods) for path, methods, what in NOT_OFFERED]

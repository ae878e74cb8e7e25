"""Shared result links. A prediction is its creator's: another caller who asks for it is told it
does not exist. The owner may make a model's results public (`PUBLIC_RESULTS` in wrangler.toml);
then anyone who has a prediction's id (a link from its creator) may read it: read only, never
billed to the reader, and without the creator's bill."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, Response

from proxy.config import Config
from proxy.errors import NotFound
from proxy.forward import Upstream, hide_upstream


async def public_result(config: Config, upstream: Upstream, prediction_id: str, origin: str) -> Response:
    reply = await upstream.send("GET", f"/v1/predictions/{prediction_id}")
    if not reply.ok and reply.status != 404:
        return reply.passthrough()  # the model server's trouble (503 and its Retry-After), as is
    prediction: Any = reply.json() if reply.ok else None
    public = {f"{config.owner}/{name}" for name in config.public_results}
    if not isinstance(prediction, dict) or prediction.get("model") not in public:
        raise NotFound("prediction not found")
    prediction = hide_upstream(prediction, config.upstream_url, origin)
    prediction["urls"] = {"get": f"{origin}/v1/predictions/{prediction_id}"}  # no cancel: not theirs
    return JSONResponse(prediction, headers={"cache-control": "no-store"})

"""A caller's own predictions and uploads, listed: `GET /v1/predictions` and `GET /v1/files`,
newest first, from the ledger (see records.py for how a prediction outlives the model server).

Anonymous visitors list nothing: they are known only by their network address, which a whole
office or a phone carrier's customers may share, so a list would show one person's pictures to
another. Reading one's own prediction by its unguessable id stays open to them.
"""

from __future__ import annotations

import functools
import json

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from proxy import pages, records
from proxy.errors import Unauthorized
from proxy.forward import hide_upstream
from proxy.gateway import gateway_of, origin

_NEEDS_KEY = (
    "listing {what} needs an API key: anonymous visitors are known only by an address others may share"
)


async def list_predictions(request: Request) -> Response:
    gateway = gateway_of(request)
    caller = await gateway.identify(request)
    if caller.kind == "anonymous":
        raise Unauthorized(_NEEDS_KEY.format(what="predictions"))
    cursor, limit = pages.read_query(request)
    page = await to_thread.run_sync(
        functools.partial(
            gateway.ledger.predictions_page,
            caller.id,
            cursor.key if cursor else None,
            limit,
            newer=bool(cursor and cursor.newer),
        )
    )
    results = []
    for prediction_id, model, created_at, stored in page.rows:
        record = await records.current(gateway, prediction_id, model, created_at, stored)
        results.append(await records.present(gateway, request, record, caller, model or None))
    body = pages.page_json(request, page, limit, results, lambda row: (row[2], row[0]))
    return JSONResponse(body, headers={"cache-control": "no-store"})


async def list_files(request: Request) -> Response:
    gateway = gateway_of(request)
    caller = await gateway.identify(request)
    if caller.kind == "anonymous":
        raise Unauthorized(_NEEDS_KEY.format(what="files"))
    cursor, limit = pages.read_query(request)
    page = await to_thread.run_sync(
        functools.partial(
            gateway.ledger.uploads_page,
            caller.id,
            records.now_z(gateway),
            cursor.key if cursor else None,
            limit,
            newer=bool(cursor and cursor.newer),
        )
    )
    results = [
        hide_upstream(json.loads(record), gateway.config.upstream_url, origin(request))
        for _, _, record in page.rows
    ]
    body = pages.page_json(request, page, limit, results, lambda row: (row[1], row[0]))
    return JSONResponse(body, headers={"cache-control": "no-store"})


ROUTES = [
    Route("/v1/predictions", list_predictions, methods=["GET"]),
    Route("/v1/files", list_files, methods=["GET"]),
]

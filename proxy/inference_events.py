"""`POST /internal/inference-events`: the model server tells the proxy each prediction it
finished, signed with Standard Webhooks (INFERENCE_WEBHOOK_SECRET). A prediction is billed the
first time the proxy sees it succeed, by this event, a poll or a `Prefer: wait` answer, whichever
comes first; so a customer who never polls is billed all the same, and still only once."""

from __future__ import annotations

import logging

from anyio import to_thread
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy import records
from proxy.auth import caller_from_id
from proxy.errors import BadRequest, Conflict, NotFound
from proxy.forward import limited, segment
from proxy.gateway import gateway_of
from proxy.logs import annotate, log_event

MAX_BODY_BYTES = 1024 * 1024


async def receive(request: Request) -> Response:
    gateway = gateway_of(request)
    secret = gateway.config.secrets.inference_webhook_secret
    if not secret:
        raise NotFound("there is no such route")  # not configured: nothing listens here
    raw = b"".join([chunk async for chunk in limited(request.stream(), MAX_BODY_BYTES)])
    try:
        prediction = Webhook(secret).verify(raw, dict(request.headers))
    except WebhookVerificationError:
        log_event("inference_event_refused", level=logging.WARNING, reason="bad or stale signature")
        raise BadRequest("the webhook signature is missing, wrong or too old") from None
    if not isinstance(prediction, dict) or not isinstance(prediction.get("id"), str):
        raise BadRequest("the event is not a prediction")
    prediction_id = segment(prediction["id"], "prediction")
    annotate(request.scope, prediction_id=prediction_id)
    creator = await to_thread.run_sync(gateway.ledger.creator_of, prediction_id)
    if creator is None:
        # The create's answer is still on its way through this proxy; the sender retries.
        raise Conflict("this prediction's creation is not recorded yet; retry shortly")
    await records.remember(gateway, prediction)
    billed = await gateway.billing.bill(prediction, caller_from_id(creator))
    if isinstance(billed, dict) and "billing" in billed and gateway.cache.rule(billed.get("model")):
        await gateway.cache.keep(billed, int(billed["metrics"]["predict_time_ms"]))
    return Response(status_code=204)


ROUTES = [Route("/internal/inference-events", receive, methods=["POST"])]

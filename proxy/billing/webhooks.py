"""`POST /stripe/webhook`: what Stripe tells the proxy, believed only when signed.

The signature is checked by the `stripe` library on the raw bytes as they arrived (a parsed and
re-serialized body would not match), with Stripe's default tolerance of 300 s against replays
of old deliveries. Each event is applied at most once: its id is written in the transaction that
applies it (proxy/billing/stripe_store.py), so a delivery Stripe repeats changes nothing. Any 2xx tells
Stripe to stop retrying, so an answer is 2xx only once the event is applied or knowingly ignored.
The handlers live beside what they change: subscription_events.py (checkout, subscriptions) and
meter_errors.py (Stripe's meter error reports).
"""

from __future__ import annotations

import json
import logging

import stripe
from anyio import to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from proxy.billing import billing_of, meter_errors, subscription_events
from proxy.billing.payouts import events as payout_events
from proxy.errors import BadRequest, Unavailable
from proxy.forward import limited
from proxy.logs import annotate, log_event

TOLERANCE_S = stripe.Webhook.DEFAULT_TOLERANCE  # 300 s
MAX_BODY_BYTES = 1024 * 1024
CHECKOUT_COMPLETED = "checkout.session.completed"
CHECKOUT_ASYNC_PAID = "checkout.session.async_payment_succeeded"
SUBSCRIPTION_CREATED = "customer.subscription.created"
SUBSCRIPTION_UPDATED = "customer.subscription.updated"
SUBSCRIPTION_DELETED = "customer.subscription.deleted"
METER_ERROR_REPORT = "v1.billing.meter.error_report_triggered"  # a thin (v2) event
METER_NOT_FOUND = "v1.billing.meter.no_meter_found"  # a thin (v2) event


async def receive(request: Request) -> Response:
    billing = billing_of(request)
    secret = billing.config.secrets.stripe_webhook_secret
    if not secret:
        raise Unavailable("Stripe webhooks are not configured here: STRIPE_WEBHOOK_SECRET is not set")
    raw = b"".join([chunk async for chunk in limited(request.stream(), MAX_BODY_BYTES)])
    try:
        _verify(raw, request.headers.get("stripe-signature"), secret)
        event = json.loads(raw)
        event_id, event_type = str(event["id"]), str(event["type"])
    except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        log_event(
            "stripe_webhook_refused", level=logging.WARNING, reason="bad or stale signature, or not an event"
        )
        raise BadRequest("the Stripe-Signature header is missing, wrong or too old") from None
    annotate(request.scope, stripe_event=event_id, stripe_event_type=event_type)
    handler = _HANDLERS.get(event_type)
    if handler is None:
        return JSONResponse({"received": True, "applied": False, "reason": "event type not handled"})
    if await to_thread.run_sync(billing.stripe_store.stripe_event_seen, event_id):
        log_event("stripe_webhook_replayed", stripe_event=event_id, type=event_type)
        return JSONResponse({"received": True, "applied": False, "reason": "already applied"})
    outcome = await handler(billing, event, raw)
    log_event("stripe_webhook", stripe_event=event_id, type=event_type, **outcome)
    return JSONResponse({"received": True, "applied": bool(outcome.get("applied"))})


def _verify(raw: bytes, header: str | None, secrets: str) -> None:
    """Snapshot events (a webhook endpoint) and thin events (an event destination) are signed
    with different secrets, so STRIPE_WEBHOOK_SECRET may list several, comma-separated."""
    candidates = [secret.strip() for secret in secrets.split(",") if secret.strip()]
    for secret in candidates[:-1]:
        try:
            stripe.WebhookSignature.verify_header(raw, header, secret, TOLERANCE_S)
            return
        except stripe.SignatureVerificationError:
            continue
    stripe.WebhookSignature.verify_header(raw, header, candidates[-1] if candidates else "", TOLERANCE_S)


_HANDLERS = {
    CHECKOUT_COMPLETED: subscription_events.checkout_paid,
    CHECKOUT_ASYNC_PAID: subscription_events.checkout_paid,
    SUBSCRIPTION_CREATED: subscription_events.subscription_changed,
    SUBSCRIPTION_UPDATED: subscription_events.subscription_changed,
    SUBSCRIPTION_DELETED: subscription_events.subscription_changed,
    METER_ERROR_REPORT: meter_errors.error_report,
    METER_NOT_FOUND: meter_errors.no_meter_found,
    **payout_events.HANDLERS,
}

ROUTES = [Route("/stripe/webhook", receive, methods=["POST"])]

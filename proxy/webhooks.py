"""`POST /stripe/webhook`: what Stripe tells the proxy, believed only when signed.

The signature is checked by the `stripe` library on the raw bytes as they arrived (a parsed and
re-serialized body would not match), with Stripe's default tolerance of 300 s against replays
of old deliveries. Each event is applied at most once: its id is written in the transaction that
applies it (proxy/_ledger_stripe.py), so a delivery Stripe repeats changes nothing. Any 2xx tells
Stripe to stop retrying, so an answer is 2xx only once the event is applied or knowingly ignored.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import stripe
from anyio import to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from stripe.events import V1BillingMeterErrorReportTriggeredEvent

from proxy.api import Gateway, gateway
from proxy.auth import new_key_id
from proxy.errors import BadRequest, Unavailable
from proxy.forward import limited
from proxy.logs import annotate, log_event

TOLERANCE_S = stripe.Webhook.DEFAULT_TOLERANCE  # 300 s
MAX_BODY_BYTES = 1024 * 1024
CHECKOUT_COMPLETED = "checkout.session.completed"
SUBSCRIPTION_DELETED = "customer.subscription.deleted"
METER_ERROR_REPORT = "v1.billing.meter.error_report_triggered"  # a thin (v2) event


async def receive(request: Request) -> Response:
    proxy = gateway(request)
    secret = proxy.config.secrets.stripe_webhook_secret
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
    if await to_thread.run_sync(proxy.ledger.stripe_event_seen, event_id):
        log_event("stripe_webhook_replayed", stripe_event=event_id, type=event_type)
        return JSONResponse({"received": True, "applied": False, "reason": "already applied"})
    outcome = await handler(proxy, event, raw)
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


async def _checkout_completed(proxy: Gateway, event: dict[str, Any], raw: bytes) -> dict[str, Any]:
    session = event["data"]["object"]
    metadata = session.get("metadata") or {}
    customer = session.get("customer")
    # Only sessions this proxy started earn a key; other checkouts on the account are not ours.
    if "modelfolio_model" not in metadata or not isinstance(customer, str):
        applied = await to_thread.run_sync(
            proxy.ledger.record_stripe_event, event["id"], event["type"], proxy.now()
        )
        return {"applied": applied, "reason": "not a modelfolio API-key checkout"}
    if session.get("status") != "complete" or session.get("payment_status") == "unpaid":
        return {"applied": False, "reason": "checkout not paid yet"}  # async payment methods succeed later
    added = await to_thread.run_sync(
        proxy.ledger.add_checkout_key,
        (event["id"], event["type"]),
        session["id"],
        customer,
        new_key_id(),
        metadata.get("modelfolio_browser"),
        proxy.now(),
    )
    return {"applied": added, "checkout_session": session["id"], "model": metadata["modelfolio_model"]}


async def _subscription_deleted(proxy: Gateway, event: dict[str, Any], raw: bytes) -> dict[str, Any]:
    customer = event["data"]["object"].get("customer")
    if not isinstance(customer, str):
        return {"applied": False, "reason": "no customer on the subscription"}
    revoked = await to_thread.run_sync(
        proxy.ledger.revoke_customer_keys, (event["id"], event["type"]), customer, proxy.now()
    )
    return {"applied": revoked is not None, "keys_revoked": revoked or 0}


async def _meter_error_report(proxy: Gateway, event: dict[str, Any], raw: bytes) -> dict[str, Any]:
    # A thin event names only the meter: the errors and their identifiers come from fetching it.
    errors: list[tuple[str, str, str]] = []
    if proxy.stripe is not None:
        try:
            notification = proxy.stripe.parse_event_notification_without_verification(raw)
            full = await notification.fetch_event_async()
        except stripe.StripeError as error:
            raise Unavailable(f"could not fetch the event from Stripe ({type(error).__name__})") from None
        if not isinstance(full, V1BillingMeterErrorReportTriggeredEvent):
            raise BadRequest("the fetched event is not a meter error report")
        for error_type in full.data.reason.error_types:
            for sample in error_type.sample_errors:
                errors.append((sample.request.identifier, error_type.code, sample.error_message))
    flagged = await to_thread.run_sync(
        proxy.ledger.flag_meter_errors, (event["id"], event["type"]), errors, proxy.now()
    )
    related = event.get("related_object") or {}
    log_event(
        "stripe_meter_error_report",
        level=logging.ERROR,
        stripe_event=event["id"],
        meter=related.get("id"),
        codes=sorted({code for _, code, _ in errors}),
        identifiers=[identifier for identifier, _, _ in errors],
        outbox_rows_flagged=flagged or 0,
    )
    return {"applied": flagged is not None, "outbox_rows_flagged": flagged or 0}


_HANDLERS = {
    CHECKOUT_COMPLETED: _checkout_completed,
    SUBSCRIPTION_DELETED: _subscription_deleted,
    METER_ERROR_REPORT: _meter_error_report,
}

ROUTES = [Route("/stripe/webhook", receive, methods=["POST"])]

"""TEST SUPPORT ONLY, part of devtools/teststripe/server.py: webhook endpoints and signed delivery,
Checkout Sessions (completed by a test-only call, or by the "Pay (test)" button of the page at the
session's `url`), subscriptions, and the thin v2 event of a meter error report. Each behaviour
names the Stripe page it follows.

Simplifications, on purpose: events are delivered while the API call (or the test-only call)
that caused them is answered, so a test needs no waiting; a failed delivery is not retried by
itself (Stripe retries for up to 3 days; `POST /_test/events/{id}/resend` redelivers, as the
dashboard's "Resend" does); thin events go to webhook endpoints that enable their type instead
of to a v2 event destination.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import html
import json
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from devtools.teststripe.server import State

API_VERSION = "2025-09-30.clover"


@dataclass
class Webhooks:
    base_url: str = ""  # this server's own address, learnt from each request
    pending: list[dict[str, Any]] = field(default_factory=list)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> event as delivered
    full_events: dict[str, dict[str, Any]] = field(default_factory=dict)  # thin event id -> with data
    deliveries: list[dict[str, Any]] = field(default_factory=list)  # {event, type, url, status}


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    # https://docs.stripe.com/webhooks#verify-manually: v1 = HMAC-SHA256 of "{t}.{raw body}"
    # keyed with the endpoint's whsec_ secret, sent as `Stripe-Signature: t=...,v1=...`.
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def queue_event(
    s: State, event_type: str, data_object: dict[str, Any], previous: dict[str, Any] | None = None
) -> dict[str, Any]:
    # https://docs.stripe.com/api/events/object (a snapshot event; `previous_attributes` on updates)
    data: dict[str, Any] = {"object": json.loads(json.dumps(data_object))}
    if previous is not None:
        data["previous_attributes"] = json.loads(json.dumps(previous))
    event = {
        "id": s.new_id("evt"),
        "object": "event",
        "api_version": API_VERSION,
        "created": int(s.clock()),
        "data": data,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }
    s.webhooks.events[event["id"]] = event
    s.webhooks.pending.append(event)
    return event


async def deliver_pending(s: State) -> list[dict[str, Any]]:
    done = []
    while s.webhooks.pending:
        done += await deliver(s, s.webhooks.pending.pop(0))
    return done


async def deliver(s: State, event: dict[str, Any]) -> list[dict[str, Any]]:
    # https://docs.stripe.com/webhooks: a POST of the JSON event to each enabled endpoint that
    # subscribes to its type; any 2xx is success.
    payload = json.dumps(event, indent=2).encode()
    results = []
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        for endpoint in s.of("webhook_endpoint"):
            wanted = endpoint["enabled_events"]
            if endpoint["status"] != "enabled" or ("*" not in wanted and event["type"] not in wanted):
                continue
            # https://docs.stripe.com/connect/webhooks: a Connect endpoint gets the connected
            # accounts' events (they carry `account`), an account endpoint the platform's own.
            if endpoint.get("connect", False) != ("account" in event):
                continue
            headers = {
                "content-type": "application/json; charset=utf-8",
                "stripe-signature": sign(payload, endpoint["secret"], int(s.clock())),
                "user-agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            }
            try:
                status = (await client.post(endpoint["url"], content=payload, headers=headers)).status_code
            except httpx.HTTPError:
                status = 0
            results.append(
                {"event": event["id"], "type": event["type"], "url": endpoint["url"], "status": status}
            )
    s.webhooks.deliveries += results
    return results


# --- endpoints: (state, params, path params) -> JSON object ---------------------------------------


def create_webhook_endpoint(s: State, p: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    # https://docs.stripe.com/api/webhook_endpoints/create: the secret is returned on create only.
    events = p.get("enabled_events")
    if not events:
        raise _error(400, "Missing required param: enabled_events.", "enabled_events")
    endpoint = {
        "id": s.new_id("we"),
        "object": "webhook_endpoint",
        "url": _url(p, "url"),
        "enabled_events": list(events),
        "status": "enabled",
        "api_version": p.get("api_version"),
        "created": int(s.clock()),
        "livemode": False,
        "secret": "whsec_" + secrets.token_urlsafe(24),
        "connect": p.get("connect") == "true",
    }
    s.objects[endpoint["id"]] = endpoint
    return endpoint


def update_webhook_endpoint(s: State, p: dict[str, Any], path: dict[str, str]) -> dict[str, Any]:
    # https://docs.stripe.com/api/webhook_endpoints/update
    endpoint = s.get("webhook_endpoint", path["id"])
    if "url" in p:
        endpoint["url"] = _url(p, "url")
    if "enabled_events" in p:
        endpoint["enabled_events"] = list(p["enabled_events"])
    if "disabled" in p:
        endpoint["status"] = "disabled" if p["disabled"] == "true" else "enabled"
    return {k: v for k, v in endpoint.items() if k != "secret"}


def create_checkout_session(s: State, p: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    # https://docs.stripe.com/api/checkout/sessions/create; a subscription needs recurring prices,
    # and a metered price takes no quantity
    # (https://docs.stripe.com/billing/subscriptions/usage-based/implementation-guide).
    mode = p.get("mode")
    if mode not in ("payment", "setup", "subscription"):
        raise _error(400, "Missing required param: mode.", "mode")
    items = p.get("line_items") or []
    if mode != "setup" and not items:
        raise _error(400, "Missing required param: line_items.", "line_items")
    recurring = [item for item in items if s.objects.get(item.get("price", ""), {}).get("recurring")]
    if mode == "subscription" and len(recurring) > 20:
        # https://docs.stripe.com/api/checkout/sessions/create#create_checkout_session-line_items
        raise _error(
            400, "A subscription Checkout Session takes at most 20 recurring line items.", "line_items"
        )
    for index, item in enumerate(items):
        price = s.get("price", item.get("price", ""), f"line_items[{index}][price]")
        if mode == "subscription" and price["recurring"] is None:
            raise _error(400, "A subscription needs recurring prices.", f"line_items[{index}][price]")
        metered = (price["recurring"] or {}).get("usage_type") == "metered"
        if metered and "quantity" in item:
            raise _error(400, "Quantity is not allowed for metered prices.", f"line_items[{index}][quantity]")
    session_id = s.new_id("cs")
    session = {
        "id": session_id,
        "object": "checkout.session",
        "mode": mode,
        "status": "open",
        "payment_status": "unpaid",
        "customer": p.get("customer"),
        "customer_email": p.get("customer_email"),
        "subscription": None,
        "line_items_prices": [item["price"] for item in items],
        # https://docs.stripe.com/api/checkout/sessions/create#create_checkout_session-subscription_data
        "subscription_data": p.get("subscription_data") or {},
        "success_url": _url(p, "success_url"),
        "cancel_url": p.get("cancel_url"),
        "metadata": p.get("metadata", {}),
        "created": int(s.clock()),
        "expires_at": int(s.clock()) + 86400,  # 24 h by default
        "livemode": False,
        # https://docs.stripe.com/api/checkout/sessions/object#checkout_session_object-url
        "url": f"{s.webhooks.base_url}/c/pay/{session_id}",
    }
    s.objects[session_id] = session
    return session


def complete_checkout_session(s: State, session_id: str, *, delayed: bool = False) -> dict[str, Any]:
    """What paying on the hosted page does: a customer (unless one was given), a subscription
    with one item per price, the session complete, then `checkout.session.completed`
    (https://docs.stripe.com/checkout/fulfillment). `delayed`: a payment method that confirms
    later (a bank debit): the session completes `unpaid` and the subscription stays
    `incomplete` until `complete_async_payment` (https://docs.stripe.com/payments/checkout/
    how-checkout-works#delayed-notification)."""
    session = s.get("checkout.session", session_id)
    if session["status"] != "open":
        raise _error(400, f"This Checkout Session is {session['status']}.", "session")
    from devtools.teststripe import subscriptions
    from devtools.teststripe.server import create_customer

    if session["customer"] is None:
        session["customer"] = create_customer(s, {"email": session["customer_email"]}, {})["id"]
    if session["mode"] == "subscription":
        wanted = session["subscription_data"]
        subscription = subscriptions.create(
            s,
            session["customer"],
            session["line_items_prices"],
            metadata=wanted.get("metadata"),
            billing_mode=(wanted.get("billing_mode") or {}).get("type", "classic"),
            status="incomplete" if delayed else "active",
        )
        session["subscription"] = subscription["id"]
    # A metered subscription owes nothing at signup: https://docs.stripe.com/api/checkout/sessions/
    # object#checkout_session_object-payment_status ("no_payment_required").
    session["status"] = "complete"
    session["payment_status"] = "unpaid" if delayed else "no_payment_required"
    queue_event(s, "checkout.session.completed", session)
    return session


def cancel_subscription(s: State, p: dict[str, Any], path: dict[str, str]) -> dict[str, Any]:
    # https://docs.stripe.com/api/subscriptions/cancel: immediate, then
    # `customer.subscription.deleted` (https://docs.stripe.com/api/events/types).
    subscription = s.get("subscription", path["id"])
    if subscription["status"] == "canceled":
        raise _error(400, f"No such subscription: '{path['id']}' is already canceled.", "id")
    subscription.update(status="canceled", canceled_at=int(s.clock()), ended_at=int(s.clock()))
    queue_event(s, "customer.subscription.deleted", subscription)
    return subscription


def queue_meter_error_report(s: State) -> list[dict[str, Any]]:
    """The reports gathered since the last call as thin events: one
    `v1.billing.meter.error_report_triggered` per meter, and one `v1.billing.meter.no_meter_found`
    for events naming no active meter. Each lists at most five sample errors per code, with the
    true count beside them, as Stripe sends
    (https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage-api#handle-meter-event-errors,
    https://docs.stripe.com/event-destinations#thin-payload)."""
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for report in s.error_reports:
        groups.setdefault(report.get("meter"), []).append(report)
    s.error_reports.clear()
    queued = []
    now = datetime.datetime.fromtimestamp(s.clock(), datetime.UTC).isoformat(timespec="milliseconds")
    for meter, reports in groups.items():
        thin: dict[str, Any] = {
            "id": s.new_id("evt"),
            "object": "v2.core.event",
            "type": "v1.billing.meter.error_report_triggered" if meter else "v1.billing.meter.no_meter_found",
            "created": now.replace("+00:00", "Z"),
            "livemode": False,
            "context": None,
        }
        if meter:
            thin["related_object"] = {
                "id": meter,
                "type": "billing.meter",
                "url": f"/v1/billing/meters/{meter}",
            }
        codes: dict[str, list[dict[str, Any]]] = {}
        for report in reports:
            codes.setdefault(report["code"], []).append(report)
        data = {
            "developer_message_summary": f"{len(reports)} meter event(s) failed validation",
            "reason": {
                "error_count": len(reports),
                "error_types": [
                    {
                        "code": code,
                        "error_count": len(items),
                        "sample_errors": [
                            {"error_message": item["message"], "request": {"identifier": item["identifier"]}}
                            for item in items[:5]  # a sample, as Stripe sends
                        ],
                    }
                    for code, items in codes.items()
                ],
            },
            "validation_start": thin["created"],
            "validation_end": thin["created"],
        }
        s.webhooks.full_events[thin["id"]] = {**thin, "data": data}
        s.webhooks.events[thin["id"]] = thin
        s.webhooks.pending.append(thin)
        queued.append(thin)
    return queued


def get_v2_event(s: State, p: dict[str, Any], path: dict[str, str]) -> dict[str, Any]:
    # https://docs.stripe.com/api/v2/core/events/retrieve
    event = s.webhooks.full_events.get(path["id"])
    if event is None:
        raise _error(404, f"No such event: '{path['id']}'", "id")
    return event


ENDPOINTS = [
    ("/v1/webhook_endpoints", create_webhook_endpoint, "POST"),
    ("/v1/webhook_endpoints/{id}", update_webhook_endpoint, "POST"),
    ("/v1/checkout/sessions", create_checkout_session, "POST"),
    ("/v1/checkout/sessions/{id}", lambda s, p, path: s.get("checkout.session", path["id"]), "GET"),
    ("/v1/subscriptions/{id}", lambda s, p, path: s.get("subscription", path["id"]), "GET"),
    ("/v1/subscriptions/{id}", cancel_subscription, "DELETE"),
    ("/v2/core/events/{id}", get_v2_event, "GET"),
]


def scripted_routes(s: State) -> list[Route]:
    """Calls no real Stripe has: a test plays the customer and the dashboard with them."""

    async def complete(request: Request) -> JSONResponse:
        body = json.loads(await request.body() or b"{}")
        session = complete_checkout_session(
            s, request.path_params["id"], delayed=body.get("payment") == "delayed"
        )
        return JSONResponse({"session": session, "deliveries": await deliver_pending(s)})

    async def resend(request: Request) -> JSONResponse:
        event = s.webhooks.events[request.path_params["id"]]
        return JSONResponse({"deliveries": await deliver(s, event)})

    async def meter_error_report(request: Request) -> JSONResponse:
        events = queue_meter_error_report(s)
        return JSONResponse({"events": [e["id"] for e in events], "deliveries": await deliver_pending(s)})

    async def hosted_page(request: Request) -> Response:
        session = s.objects.get(request.path_params["id"])
        if session is None or session["object"] != "checkout.session":
            return _page(404, "No such checkout", "<p>This checkout session does not exist.</p>")
        if request.method == "GET" or session["status"] != "open":
            return _page(200 if request.method == "GET" else 400, "Checkout", _pay_form(s, session))
        completed = complete_checkout_session(s, session["id"])
        await deliver_pending(s)
        # https://docs.stripe.com/payments/checkout/custom-success-page: the template variable
        # {CHECKOUT_SESSION_ID} in success_url is replaced with the session's id.
        success = completed["success_url"].replace("{CHECKOUT_SESSION_ID}", completed["id"])
        return RedirectResponse(success, status_code=303)

    return [
        Route("/c/pay/{id}", hosted_page, methods=["GET", "POST"]),
        Route("/_test/checkout/sessions/{id}/complete", complete, methods=["POST"]),
        Route("/_test/events/{id}/resend", resend, methods=["POST"]),
        Route("/_test/billing/meter_error_report", meter_error_report, methods=["POST"]),
    ]


def _pay_form(s: State, session: dict[str, Any]) -> str:
    """The hosted Checkout page, reduced to what a test needs: the line items and one button
    that pays exactly as `POST /_test/checkout/sessions/{id}/complete` does."""
    rows = []
    for price_id in session["line_items_prices"]:
        price = s.get("price", price_id)
        product = s.objects.get(price["product"], {})
        recurring = price["recurring"] or {}
        per = " per unit, metered" if recurring.get("usage_type") == "metered" else ""
        every = f" / {recurring['interval']}" if recurring else ""
        rows.append(
            f'<li data-testid="line-item">{html.escape(str(product.get("name", price["product"])))}: '
            f"{html.escape(price['unit_amount_decimal'])} {html.escape(price['currency'])} cents{per}{every}"
            "</li>"
        )
    if session["status"] != "open":
        return f"<p>This checkout session is {html.escape(session['status'])}.</p>"
    return (
        f"<ul>{''.join(rows)}</ul>"
        f'<form method="post" action="/c/pay/{html.escape(session["id"])}">'
        '<button type="submit">Pay (test)</button></form>'
    )


def _page(status: int, title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{title} · TEST STRIPE</title></head><body>"
        "<p><strong>TEST STRIPE — no real payment</strong> (modelfolio test support)</p>"
        f"<h1>{title}</h1>{body}</body></html>",
        status_code=status,
        headers={"cache-control": "no-store"},
    )


def _url(p: dict[str, Any], name: str) -> str:
    value = p.get(name) or ""
    if not value.startswith(("http://", "https://")):
        raise _error(400, f"Invalid URL: {name} must be an http(s) URL.", name)
    return str(value)


def _error(status: int, message: str, param: str) -> Exception:
    from devtools.teststripe.server import StripeError

    return StripeError(status, message, code="resource_missing" if status == 404 else None, param=param)

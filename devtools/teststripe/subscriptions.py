"""TEST SUPPORT ONLY, part of devtools/teststripe/server.py: subscriptions and their items as
usage-based billing uses them, and the events they send. Each behaviour names the Stripe page it
follows.

Scripted calls no real Stripe has play the customer's bank: `POST /_test/subscriptions/{id}/status`
moves a subscription to `past_due`, `unpaid` or back to `active` (as failed and recovered invoice
payments do), with the `customer.subscription.updated` event Stripe sends;
`POST /_test/checkout/sessions/{id}/async_payment` settles a delayed checkout payment.
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from devtools.teststripe.checkout import deliver_pending, queue_event

if TYPE_CHECKING:
    from devtools.teststripe.server import State

# https://docs.stripe.com/api/subscriptions/object#subscription_object-status
STATUSES = (
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "canceled",
    "unpaid",
    "paused",
)
LIVE_FOR_LISTING = ("incomplete", "trialing", "active", "past_due", "unpaid", "paused")


def create(
    s: State,
    customer: str,
    prices: list[str],
    *,
    metadata: dict[str, Any] | None = None,
    billing_mode: str = "classic",
    status: str = "active",
) -> dict[str, Any]:
    """A subscription with one item per price, then `customer.subscription.created`
    (https://docs.stripe.com/api/events/types#event_types-customer.subscription.created)."""
    s.get("customer", customer, "customer")
    subscription_id = s.new_id("sub")
    subscription = {
        "id": subscription_id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        # https://docs.stripe.com/billing/subscriptions/billing-mode: classic unless asked.
        "billing_mode": {"type": billing_mode},
        "items": {"object": "list", "data": [], "has_more": False},
        "metadata": dict(metadata or {}),
        "created": int(s.clock()),
        "canceled_at": None,
        "ended_at": None,
        "livemode": False,
    }
    for price in prices:
        _add_item(s, subscription, price)
    s.objects[subscription_id] = subscription
    queue_event(s, "customer.subscription.created", subscription)
    return subscription


def _add_item(s: State, subscription: dict[str, Any], price_id: str, param: str = "price") -> dict[str, Any]:
    price = s.get("price", price_id, param)
    if price["recurring"] is None:
        raise _error(400, "A subscription needs recurring prices.", param)
    if any(item["price"]["id"] == price_id for item in subscription["items"]["data"]):
        # https://docs.stripe.com/api/subscription_items/create: one item per price.
        raise _error(400, f"The price {price_id} is already on subscription {subscription['id']}.", param)
    item = {
        "id": s.new_id("si"),
        "object": "subscription_item",
        "subscription": subscription["id"],
        "price": price,
        "metadata": {},
        "created": int(s.clock()),
    }
    subscription["items"]["data"].append(item)
    s.objects[item["id"]] = item
    return item


def create_subscription(s: State, p: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    # https://docs.stripe.com/api/subscriptions/create
    customer = p.get("customer") or ""
    items = p.get("items") or []
    if not customer or not items:
        raise _error(
            400, "Missing required param: customer and items.", "customer" if not customer else "items"
        )
    mode = (p.get("billing_mode") or {}).get("type", "classic")
    prices = [item.get("price", "") for item in items]
    return create(s, customer, prices, metadata=p.get("metadata"), billing_mode=mode)


def list_subscriptions(s: State, p: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    # https://docs.stripe.com/api/subscriptions/list: without `status`, canceled ones are left out.
    from devtools.teststripe.server import _listing

    status = p.get("status")
    found = [
        o
        for o in s.of("subscription")
        if p.get("customer") in (None, o["customer"])
        and (status == "all" or o["status"] == status or (status is None and o["status"] in LIVE_FOR_LISTING))
    ]
    return _listing(found, p, "/v1/subscriptions")


def create_item(s: State, p: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    # https://docs.stripe.com/api/subscription_items/create; a metered price takes no quantity.
    subscription = s.get("subscription", p.get("subscription", ""), "subscription")
    if subscription["status"] in ("canceled", "incomplete_expired"):
        raise _error(
            400, f"The subscription {subscription['id']} is {subscription['status']}.", "subscription"
        )
    before = copy.deepcopy(subscription["items"])
    item = _add_item(s, subscription, p.get("price", ""))
    queue_event(s, "customer.subscription.updated", subscription, previous={"items": before})
    return item


def update_item(s: State, p: dict[str, Any], path: dict[str, str]) -> dict[str, Any]:
    # https://docs.stripe.com/api/subscription_items/update: a new price on the same item.
    item = s.get("subscription_item", path["id"])
    subscription = s.get("subscription", item["subscription"])
    if "price" in p:
        price = s.get("price", p["price"], "price")
        if price["recurring"] is None:
            raise _error(400, "A subscription needs recurring prices.", "price")
        before = copy.deepcopy(subscription["items"])
        item["price"] = price
        queue_event(s, "customer.subscription.updated", subscription, previous={"items": before})
    if "metadata" in p:
        item["metadata"] = dict(p["metadata"])
    return item


def set_status(s: State, subscription_id: str, status: str) -> dict[str, Any]:
    """What failed and recovered invoice payments do to a subscription: its status changes, and
    Stripe sends `customer.subscription.updated` with the old status in `previous_attributes`
    (https://docs.stripe.com/billing/subscriptions/overview#subscription-statuses)."""
    if status not in STATUSES or status == "canceled":
        raise _error(400, f"Invalid status: {status} (cancel with DELETE /v1/subscriptions/{{id}})", "status")
    subscription = s.get("subscription", subscription_id)
    if subscription["status"] == "canceled":
        raise _error(400, f"The subscription {subscription_id} is canceled.", "status")
    previous = subscription["status"]
    subscription["status"] = status
    queue_event(s, "customer.subscription.updated", subscription, previous={"status": previous})
    return subscription


def complete_async_payment(s: State, session_id: str, *, succeeded: bool) -> dict[str, Any]:
    """The delayed payment's outcome: `checkout.session.async_payment_succeeded` (the session
    `paid`, its subscription `active`) or `..._failed` (https://docs.stripe.com/api/events/types)."""
    session = s.get("checkout.session", session_id)
    if session["status"] != "complete" or session["payment_status"] != "unpaid":
        raise _error(
            400, f"This Checkout Session has no payment pending ({session['payment_status']}).", "session"
        )
    if succeeded:
        session["payment_status"] = "paid"
        if session["subscription"]:
            set_status(s, session["subscription"], "active")
        queue_event(s, "checkout.session.async_payment_succeeded", session)
    else:
        if session["subscription"]:
            subscription = s.get("subscription", session["subscription"])
            subscription["status"] = "incomplete_expired"
            queue_event(s, "customer.subscription.updated", subscription, previous={"status": "incomplete"})
        queue_event(s, "checkout.session.async_payment_failed", session)
    return session


ENDPOINTS = [
    ("/v1/subscriptions", create_subscription, "POST"),
    ("/v1/subscriptions", list_subscriptions, "GET"),
    ("/v1/subscription_items", create_item, "POST"),
    ("/v1/subscription_items/{id}", update_item, "POST"),
    ("/v1/subscription_items/{id}", lambda s, p, path: s.get("subscription_item", path["id"]), "GET"),
]


def scripted_routes(s: State) -> list[Route]:
    from devtools.teststripe.server import StripeError

    async def status(request: Request) -> JSONResponse:
        body = await request.json()
        try:
            subscription = set_status(s, request.path_params["id"], str(body.get("status")))
        except StripeError as error:
            return JSONResponse({"error": error.body}, status_code=error.status)
        return JSONResponse({"subscription": subscription, "deliveries": await deliver_pending(s)})

    async def async_payment(request: Request) -> JSONResponse:
        body = json.loads(await request.body() or b"{}")
        session = complete_async_payment(
            s, request.path_params["id"], succeeded=body.get("outcome") != "failed"
        )
        return JSONResponse({"session": session, "deliveries": await deliver_pending(s)})

    return [
        Route("/_test/subscriptions/{id}/status", status, methods=["POST"]),
        Route("/_test/checkout/sessions/{id}/async_payment", async_payment, methods=["POST"]),
    ]


def _error(status: int, message: str, param: str) -> Exception:
    from devtools.teststripe.server import StripeError

    return StripeError(status, message, code="resource_missing" if status == 404 else None, param=param)

"""The webhooks that keep the ledger's mirror of subscriptions (proxy/billing/subscriptions.py) and
the checkout keys true to Stripe:

    checkout.session.completed, checkout.session.async_payment_succeeded
        a paid checkout binds a key to its session, for a subscription read from Stripe then
        (a retried event for a subscription deleted since binds a revoked key)
    customer.subscription.created / updated / deleted
        the subscription's status and items: past_due and unpaid suspend its keys (402), a
        payment makes them work again, an ended subscription revokes them

A handler that needs Stripe and cannot reach it answers 503, so Stripe delivers the event again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import stripe
from anyio import to_thread

from proxy.auth import new_key_id
from proxy.billing.subscriptions import Subscription, metered_meters_without_names, parse
from proxy.errors import Unavailable
from proxy.logs import log_event

if TYPE_CHECKING:
    from proxy.billing import Billing


async def read_state(
    client: stripe.StripeClient | None, subscription: dict[str, Any], stripe_time: int
) -> Subscription:
    """A Stripe subscription as the mirror keeps it; meters are looked up only for prices that
    do not name theirs."""
    meters: dict[str, str] = {}
    if metered_meters_without_names(subscription) and client is not None:
        async for meter in (await client.v1.billing.meters.list_async({"limit": 100})).auto_paging_iter():
            meters[meter.id] = meter.event_name
    return parse(subscription, stripe_time, meters)


async def fetch_state(client: stripe.StripeClient, subscription_id: str, stripe_time: int) -> Subscription:
    found = await client.v1.subscriptions.retrieve_async(subscription_id)
    return await read_state(client, found.to_dict(), stripe_time)


async def subscription_changed(billing: Billing, event: dict[str, Any], raw: bytes) -> dict[str, Any]:
    state = await read_state(billing.stripe, event["data"]["object"], int(event.get("created") or 0))
    recorded = await to_thread.run_sync(
        billing.subscriptions.record, state, billing.now(), (event["id"], event["type"])
    )
    if recorded.keys_revoked:
        log_event(
            "api_keys_revoked", customer=state.customer, keys=recorded.keys_revoked, reason=state.status
        )
    return {
        "applied": recorded.applied,
        "subscription": state.id,
        "status": state.status,
        "items": len(state.items),
        "keys_revoked": recorded.keys_revoked,
    }


async def checkout_paid(billing: Billing, event: dict[str, Any], raw: bytes) -> dict[str, Any]:
    session = event["data"]["object"]
    metadata = session.get("metadata") or {}
    customer = session.get("customer")
    # Only sessions this proxy started earn a key; other checkouts on the account are not ours.
    if "modelfolio_model" not in metadata or not isinstance(customer, str):
        applied = await to_thread.run_sync(
            billing.stripe_store.record_stripe_event, event["id"], event["type"], billing.now()
        )
        return {"applied": applied, "reason": "not a modelfolio API-key checkout"}
    if session.get("status") != "complete" or session.get("payment_status") == "unpaid":
        # A delayed payment: checkout.session.async_payment_succeeded comes when it clears.
        return {"applied": False, "reason": "checkout not paid yet"}
    subscription_id = session.get("subscription")
    if isinstance(subscription_id, str):
        if billing.stripe is None:
            raise Unavailable(
                "STRIPE_SECRET_KEY is not set here, so a checkout's subscription cannot be read"
            )
        try:
            # Read now, not from the event: a retried event may come after the subscription ended.
            state = await fetch_state(billing.stripe, subscription_id, int(event.get("created") or 0))
        except stripe.StripeError as error:
            log_event("checkout_subscription_unread", level=logging.WARNING, error=type(error).__name__)
            raise Unavailable("Stripe did not answer; deliver the event again") from None
        await to_thread.run_sync(billing.subscriptions.record, state, billing.now())
    added = await to_thread.run_sync(
        billing.stripe_store.add_checkout_key,
        (event["id"], event["type"]),
        session["id"],
        customer,
        new_key_id(),
        metadata.get("modelfolio_browser"),
        billing.now(),
        subscription_id if isinstance(subscription_id, str) else None,
    )
    return {"applied": added, "checkout_session": session["id"], "model": metadata["modelfolio_model"]}

"""What billing has to say about API keys the owner makes: `keys create` gives a key only to a
customer whose subscription at Stripe is live (a key without one would run predictions nobody is
charged for), and mirrors that subscription in the ledger so the key works at once; `keys
recover` makes a one-time link for a customer who lost theirs (proxy/billing/recovery.py); `keys
rotate` replaces a key, the old one working for a grace period."""

from __future__ import annotations

import asyncio
import datetime

import stripe

from proxy.auth import hash_key, new_api_key
from proxy.billing import stripe_api
from proxy.billing.recovery import RecoveryStore
from proxy.billing.subscription_events import read_state
from proxy.billing.subscriptions import Subscription, SubscriptionStore
from proxy.config import Config
from proxy.errors import CommandError
from proxy.ledger import Ledger
from proxy.storage import Database


def require_live_subscription(config: Config, database: Database, customer: str) -> str:
    """Reads the customer's subscriptions from Stripe into the ledger (filling in what it does
    not know yet) and returns the live one's status; CommandError naming why not otherwise.
    Without STRIPE_SECRET_KEY there is nothing to check against, and nothing will be charged."""
    key = config.secrets.stripe_secret_key
    if not key:
        return "unbilled"
    store = SubscriptionStore(database)
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
    try:
        states = asyncio.run(_subscriptions(config, key, customer))
    except stripe.StripeError as error:
        raise CommandError(
            f"Stripe did not answer ({type(error).__name__}), so {customer}'s subscription cannot be "
            "checked; try again"
        ) from None
    for state in states:
        store.record(state, now)
    access = store.access(customer)
    if access.standing != "live":
        found = f"its subscription is {access.status}" if access.status else "it has no subscription"
        raise CommandError(
            f"{customer} cannot be given a key: {found} at Stripe, so its predictions would be charged to "
            "nobody. It gets one by buying through 'Get an API key' on a model page, or once its "
            "subscription is paid"
        )
    return str(access.status)


def recovery_link(config: Config, database: Database, customer: str, valid: datetime.timedelta) -> str:
    """A one-time link giving `customer` a new key (and revoking the others), for the owner to
    send to the email address Stripe has for the customer."""
    require_live_subscription(config, database, customer)
    now = datetime.datetime.now(datetime.UTC)
    token = RecoveryStore(database).create_link(customer, now, valid)
    return f"{config.public_origin}/billing/recover?token={token}"


def rotate(database: Database, key_id: str, grace: datetime.timedelta) -> tuple[str, str, str]:
    """(new key id, new key, when the old one stops working)."""
    now = datetime.datetime.now(datetime.UTC)
    expires = (now + grace).isoformat(timespec="microseconds")
    new_id, key = new_api_key()
    if not Ledger(database).rotate_api_key(
        key_id, new_id, hash_key(key), now.isoformat(timespec="microseconds"), expires
    ):
        raise CommandError(f"no live key with id {key_id!r} to rotate")
    return new_id, key, expires


async def _subscriptions(config: Config, key: str, customer: str) -> list[Subscription]:
    connection = stripe_api.connect(key, config.billing)
    try:
        listed = await connection.client.v1.subscriptions.list_async(
            {"customer": customer, "status": "all", "limit": 100}
        )
        # Stripe's time 0: what the ledger learnt from webhooks is newer and stays.
        return [await read_state(connection.client, s.to_dict(), 0) async for s in listed.auto_paging_iter()]
    finally:
        await connection.aclose()

"""What each customer's Stripe subscription pays for, mirrored in the ledger, so that a key's right
to a model and the price a prediction is billed at are read from the ledger: the request path
never calls Stripe.

The product: a customer has one subscription with one metered item per model. Checkout subscribes
to every model's price at once (a metered item costs nothing until used), `billing sync-catalog`
adds a new model's price to every subscription, and a prediction on a model whose price is not on
the key's subscription is refused (402): a meter event nothing charges would be usage given away.

The mirror is written from Stripe's subscription events, and from Stripe itself when a checkout
completes or the owner creates a key. Each state carries Stripe's time: an older state delivered
late never overwrites a newer one, and an ended subscription never comes back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from proxy.billing.money import meter_event_name
from proxy.billing.stripe_store import claim_event
from proxy.errors import PaymentRequired
from proxy.storage import Cursor, Database

LIVE = frozenset({"active", "trialing"})  # keys work
OWING = frozenset({"past_due", "unpaid", "incomplete", "paused"})  # keys suspended until it pays
ENDED = frozenset({"canceled", "incomplete_expired"})  # keys revoked
EVENT_NAME_KEY = "modelfolio_event_name"  # a price's metadata, set by sync-catalog
MODEL_KEY = "modelfolio_model"


@dataclass(frozen=True)
class Item:
    id: str
    event_name: str  # the meter it charges
    price_id: str
    cents_per_ms: str  # Stripe's unit_amount_decimal


@dataclass(frozen=True)
class Subscription:
    id: str
    customer: str
    status: str
    billing_mode: str
    stripe_time: int  # Stripe's time (Unix seconds) of this state
    items: tuple[Item, ...]


@dataclass(frozen=True)
class Access:
    """A customer's standing: its best subscription status (None: no subscription known) and
    the price per meter (cents per ms) of the items of the subscriptions in that standing."""

    status: str | None
    prices: dict[str, Decimal]

    @property
    def standing(self) -> str:
        if self.status is None:
            return "none"
        return "live" if self.status in LIVE else "owing" if self.status in OWING else "ended"


@dataclass(frozen=True)
class Recorded:
    applied: bool  # False: the ledger already had this state or a newer one
    keys_revoked: int


def metered_meters_without_names(subscription: Mapping[str, Any]) -> set[str]:
    """Meter ids of metered items whose price does not name its meter's event (prices made
    outside sync-catalog): those need Stripe's meter list to map."""
    return {
        str(price["recurring"]["meter"])
        for price in _prices(subscription)
        if not (price.get("metadata") or {}).get(EVENT_NAME_KEY) and price["recurring"].get("meter")
    }


def parse(subscription: Mapping[str, Any], stripe_time: int, meters: Mapping[str, str]) -> Subscription:
    """A Stripe subscription (a webhook's JSON or the SDK's `to_dict()`); `meters` maps meter
    ids to event names for prices that do not say theirs. Licensed (non-metered) items are left
    out: they charge no meter."""
    items = []
    for raw in (subscription.get("items") or {}).get("data") or []:
        price = raw.get("price") or {}
        recurring = price.get("recurring") or {}
        if recurring.get("usage_type") != "metered":
            continue
        name = (price.get("metadata") or {}).get(EVENT_NAME_KEY) or meters.get(str(recurring.get("meter")))
        cents = price.get("unit_amount_decimal")
        if cents is None and price.get("unit_amount") is not None:
            cents = price["unit_amount"]
        if not name or not _decimal(cents):
            continue
        items.append(Item(str(raw["id"]), str(name), str(price["id"]), format(Decimal(str(cents)), "f")))
    mode = (subscription.get("billing_mode") or {}).get("type") or "classic"
    return Subscription(
        str(subscription["id"]),
        str(subscription["customer"]),
        str(subscription["status"]),
        str(mode),
        stripe_time,
        tuple(items),
    )


class SubscriptionStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    def record(self, state: Subscription, at: str, event: tuple[str, str] | None = None) -> Recorded:
        """Applies a subscription's state (and claims `event`, its Stripe event, in the same
        transaction), unless the ledger has a newer one: a state read from Stripe outside an event
        comes with stripe_time 0 and fills in only what the ledger does not know, or an end. An
        ended subscription revokes its customer's keys unless another of theirs is still alive."""
        with self.database.transaction() as cur:
            if event is not None and not claim_event(cur, *event, at):
                return Recorded(False, 0)
            cur.execute(
                f"SELECT stripe_time, status FROM stripe_subscriptions WHERE id = ?{self._locking}",  # noqa: S608
                (state.id,),
            )
            known = cur.fetchone()
            # Ended is for good, and newer than anything; otherwise the newer state wins.
            stale = known is not None and state.status not in ENDED and int(known[0]) > state.stripe_time
            if known is not None and (known[1] in ENDED or stale):
                return Recorded(False, 0)
            cur.execute(
                "INSERT INTO stripe_subscriptions "
                "(id, customer, status, billing_mode, stripe_time, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET status = excluded.status, "
                "billing_mode = excluded.billing_mode, stripe_time = excluded.stripe_time, "
                "updated_at = excluded.updated_at",
                (state.id, state.customer, state.status, state.billing_mode, state.stripe_time, at),
            )
            _replace_items(cur, state, at)
            revoked = _revoke_if_nothing_left(cur, state.customer, at) if state.status in ENDED else 0
        return Recorded(True, revoked)

    def access(self, customer: str) -> Access:
        rows = self._items_of(customer)
        if not rows:
            return Access(None, {})
        rank = {"live": 0, "owing": 1, "ended": 2}
        best = min(rows, key=lambda row: (rank[_standing(row[0])], -row[1]))
        standing = _standing(best[0])
        prices: dict[str, Decimal] = {}
        for status, _time, event_name, cents in sorted(rows, key=lambda row: row[1]):
            if _standing(status) == standing and event_name is not None and cents is not None:
                prices[event_name] = Decimal(cents)
        return Access(best[0], prices)

    def price(self, customer: str, event_name: str) -> Decimal | None:
        """Cents per ms the customer's subscription charges on this meter: a live subscription's
        item first, then one that owes, then the latest that ended (usage up to its end is on its
        final invoice)."""
        rank = {"live": 0, "owing": 1, "ended": 2}
        found = [(s, t, c) for s, t, e, c in self._items_of(customer) if e == event_name and c is not None]
        if not found:
            return None
        best = min(found, key=lambda row: (rank[_standing(row[0])], -row[1]))
        return Decimal(best[2])

    def items(self, customer: str) -> list[tuple[str, str, str, str, str]]:
        """(subscription id, event name, price id, cents per ms, price since) of each item."""
        with self.database.transaction() as cur:
            cur.execute(
                "SELECT subscription_id, event_name, price_id, cents_per_ms, price_since "
                "FROM stripe_subscription_items WHERE customer = ? ORDER BY subscription_id, event_name",
                (customer,),
            )
            return [tuple(row) for row in cur.fetchall()]

    def status_of(self, subscription_id: str) -> str | None:
        with self.database.transaction() as cur:
            cur.execute("SELECT status FROM stripe_subscriptions WHERE id = ?", (subscription_id,))
            row = cur.fetchone()
        return str(row[0]) if row else None

    def _items_of(self, customer: str) -> list[tuple[str, int, str | None, str | None]]:
        with self.database.transaction() as cur:
            cur.execute(
                "SELECT s.status, s.stripe_time, i.event_name, i.cents_per_ms FROM stripe_subscriptions s "
                "LEFT JOIN stripe_subscription_items i ON i.subscription_id = s.id WHERE s.customer = ?",
                (customer,),
            )
            return [(str(s), int(t), e, c) for s, t, e, c in cur.fetchall()]

    @property
    def _locking(self) -> str:
        return " FOR UPDATE" if self.database.dialect == "postgresql" else ""


def refuse_unless_paid(access: Access) -> None:
    if access.standing == "none":
        raise PaymentRequired(
            "this API key's customer has no subscription here, so its predictions cannot be billed; "
            "buy a key with 'Get an API key' on a model page, or ask the owner of this portfolio"
        )
    if access.standing == "owing":
        raise PaymentRequired(
            f"payment is overdue: the subscription is {access.status}. Pay the open invoice (Stripe "
            "emailed it); this key works again as soon as it is paid"
        )
    if access.standing == "ended":
        raise PaymentRequired("the subscription has ended, so this key can no longer run predictions")


def refuse_unless_priced(access: Access, model: str) -> None:
    if meter_event_name(model) not in access.prices:
        raise PaymentRequired(
            f"your subscription has no price for {model} yet, so predictions on it cannot be billed; "
            "the owner adds each model's price to every subscription (python -m proxy billing "
            "sync-catalog): try again later, or ask the owner of this portfolio"
        )


def _standing(status: str) -> str:
    return "live" if status in LIVE else "owing" if status in OWING else "ended"


def _replace_items(cur: Cursor, state: Subscription, at: str) -> None:
    cur.execute(
        "SELECT id, price_id, price_since FROM stripe_subscription_items WHERE subscription_id = ?",
        (state.id,),
    )
    before = {item_id: (price_id, since) for item_id, price_id, since in cur.fetchall()}
    cur.execute("DELETE FROM stripe_subscription_items WHERE subscription_id = ?", (state.id,))
    for item in state.items:
        price_id, since = before.get(item.id, (None, at))
        cur.execute(
            "INSERT INTO stripe_subscription_items "
            "(id, subscription_id, customer, event_name, price_id, cents_per_ms, price_since) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                item.id,
                state.id,
                state.customer,
                item.event_name,
                item.price_id,
                item.cents_per_ms,
                since if price_id == item.price_id else at,
            ),
        )


def _revoke_if_nothing_left(cur: Cursor, customer: str, at: str) -> int:
    cur.execute("SELECT status FROM stripe_subscriptions WHERE customer = ?", (customer,))
    if any(status not in ENDED for (status,) in cur.fetchall()):
        return 0
    cur.execute(
        "UPDATE checkout_keys SET revoked_at = ? WHERE customer = ? AND revoked_at IS NULL", (at, customer)
    )
    cur.execute(
        "UPDATE api_keys SET revoked_at = ? WHERE customer = ? AND revoked_at IS NULL", (at, customer)
    )
    return cur.rowcount


def _prices(subscription: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    prices = []
    for raw in (subscription.get("items") or {}).get("data") or []:
        price = raw.get("price") or {}
        if (price.get("recurring") or {}).get("usage_type") == "metered":
            prices.append(price)
    return prices


def _decimal(value: Any) -> bool:
    try:
        return value is not None and Decimal(str(value)).is_finite()
    except InvalidOperation:
        return False

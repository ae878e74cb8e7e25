"""The ledger's mirror of subscriptions, on SQLite and PostgreSQL alike: a newer state wins over a
late older one, an ended subscription stays ended and revokes its customer's keys, and a
customer's standing and prices read as the request path needs them."""

from __future__ import annotations

from decimal import Decimal

from proxy.billing.subscriptions import Item, Subscription, SubscriptionStore
from proxy.ledger import Ledger
from proxy.storage import Database

AT = "2025-06-01T12:00:00.000000+00:00"


def state(status: str, time: int, cents: str = "0.00005", subscription: str = "sub_1") -> Subscription:
    items = (Item(f"si_{subscription}", "o_digits_predict_ms", f"price_{cents}", cents),)
    return Subscription(subscription, "cus_A", status, "flexible", time, items)


def test_a_late_older_state_never_overwrites_a_newer_one(any_database: Database) -> None:
    store = SubscriptionStore(any_database)
    assert store.record(state("active", 10), AT).applied
    assert store.record(state("past_due", 20), AT).applied
    assert not store.record(state("active", 15), AT).applied  # delivered late
    assert store.access("cus_A").status == "past_due" and store.access("cus_A").standing == "owing"
    assert store.record(state("active", 30, cents="0.0001"), AT).applied
    access = store.access("cus_A")
    assert access.standing == "live" and access.prices == {"o_digits_predict_ms": Decimal("0.0001")}


def test_an_ended_subscription_stays_ended_and_revokes_the_keys(any_database: Database) -> None:
    store, ledger = SubscriptionStore(any_database), Ledger(any_database)
    ledger.add_api_key("k1", "hash1", "cus_A", AT)
    store.record(state("active", 10), AT)
    ended = store.record(state("canceled", 5), AT)  # an end applies whatever its time
    assert ended.applied and ended.keys_revoked == 1 and ledger.api_key("k1").revoked_at == AT
    assert not store.record(state("active", 99), AT).applied
    assert store.access("cus_A").standing == "ended"
    assert store.price("cus_A", "o_digits_predict_ms") == Decimal("0.00005")  # its final invoice's


def test_another_live_subscription_keeps_the_keys_and_sets_the_price(any_database: Database) -> None:
    store, ledger = SubscriptionStore(any_database), Ledger(any_database)
    ledger.add_api_key("k1", "hash1", "cus_A", AT)
    store.record(state("active", 10, subscription="sub_old"), AT)
    store.record(state("active", 11, cents="0.0002", subscription="sub_new"), AT)
    assert store.record(state("canceled", 12, subscription="sub_old"), AT).keys_revoked == 0
    assert ledger.api_key("k1").revoked_at is None
    assert store.price("cus_A", "o_digits_predict_ms") == Decimal("0.0002")
    assert store.access("cus_B").standing == "none"

"""Stripe's meter error reports turn every row they stand for into a dead letter, beyond the few
sample errors a report names: a customer Stripe does not know, a meter it does not have."""

from __future__ import annotations

import httpx

from proxy.auth import hash_key, new_api_key
from proxy.billing.money import meter_event_name
from tests.support.billing import MODEL, Shop, mirror_subscription, wait_until
from tests.support.proxy import IMAGE, bearer, predict


def key_for(shop: Shop, customer: str, models: tuple[str, ...] = (MODEL,)) -> str:
    """A key for a customer the ledger believes subscribed (Stripe may know nothing of it)."""
    with shop.stores() as stores:
        key_id, key = new_api_key()
        stores.ledger.add_api_key(key_id, hash_key(key), customer, "2025-06-01T00:00:00+00:00")
        mirror_subscription(stores, customer, models)
    return key


def drained(shop: Shop) -> bool:
    with shop.stores() as stores:
        return stores.usage.undelivered_meter_events() == []


def report(shop: Shop) -> list[dict]:
    return httpx.post(f"{shop.stripe_url}/_test/billing/meter_error_report").json()["deliveries"]


def test_a_report_counting_more_errors_than_it_samples_dead_letters_every_row(shop: Shop) -> None:
    ghost = key_for(shop, "cus_ghost")
    good, session = shop.buy()
    lost = [predict(shop.proxy, bearer(ghost)).json()["id"] for _ in range(7)]
    fine = predict(shop.proxy, bearer(good)).json()["id"]
    wait_until(lambda: drained(shop), "the outbox to drain")
    assert [d["status"] for d in report(shop)] == [200]  # 5 of the 7 named, as Stripe samples

    with shop.stores() as stores:
        dead = {letter.event.prediction_id: letter.reason for letter in stores.usage.dead_letters()}
        totals = stores.usage.delivered_meter_totals("0", "9")
    assert sorted(dead) == sorted(lost) and fine not in dead
    assert all("meter_event_customer_not_found" in reason for reason in dead.values())
    event_name = meter_event_name(MODEL)
    assert ("cus_ghost", event_name) not in totals and totals[session["customer"], event_name] == 13


def test_events_on_a_meter_stripe_does_not_have_are_dead_letters(shop: Shop) -> None:
    nowhere = "modelfolio/nowhere"
    key = key_for(shop, "cus_lost", (nowhere,))
    answer = shop.proxy.post(
        f"/v1/models/{nowhere}/predictions", json={"input": IMAGE}, headers={**bearer(key), "Prefer": "wait"}
    )
    wait_until(lambda: drained(shop), "the outbox to drain")
    assert [(d["type"], d["status"]) for d in report(shop)] == [("v1.billing.meter.no_meter_found", 200)]
    with shop.stores() as stores:
        (letter,) = stores.usage.dead_letters()
    assert letter.event.prediction_id == answer.json()["id"] and "no_meter" in letter.reason

"""`POST /stripe/webhook` believes only what Stripe signed, recently, once: a forged, a stale and
a replayed delivery change nothing; a meter error report flags the outbox rows it names."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from typing import Any

import httpx
import pytest

from devtools.teststripe.checkout import sign
from proxy.auth import hash_key, new_api_key
from tests.support.billing import MODEL, Shop, mirror_subscription, wait_until
from tests.support.proxy import bearer, predict

TABLES = ("stripe_events", "checkout_keys", "api_keys", "meter_error_flags")


def snapshot(shop: Shop) -> dict[str, list[Any]]:
    with sqlite3.connect(shop.ledger_path) as db:
        return {table: db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall() for table in TABLES}


def paid_checkout_event(event_id: str, session_id: str) -> bytes:
    session = {
        "id": session_id,
        "object": "checkout.session",
        "mode": "subscription",
        "status": "complete",
        "payment_status": "paid",
        "customer": "cus_forged",
        "metadata": {"modelfolio_model": MODEL},
    }
    event = {
        "id": event_id,
        "object": "event",
        "type": "checkout.session.completed",
        "data": {"object": session},
    }
    return json.dumps(event).encode()


def post(shop: Shop, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"content-type": "application/json"} | ({"stripe-signature": signature} if signature else {})
    return shop.proxy.post("/stripe/webhook", content=body, headers=headers)


@pytest.mark.parametrize(
    "how",
    ["wrong secret", "older than 5 minutes", "no signature", "body changed after signing", "garbage header"],
)
def test_a_forged_or_stale_webhook_gets_400_and_changes_nothing(shop: Shop, how: str) -> None:
    body, now = paid_checkout_event("evt_forged", "cs_forged"), int(time.time())
    signature = {
        "wrong secret": sign(body, "whsec_not_the_endpoints", now),
        "older than 5 minutes": sign(body, shop.webhook_secret, now - 301),
        "no signature": None,
        "body changed after signing": sign(
            body.replace(b"cus_forged", b"cus_other1"), shop.webhook_secret, now
        ),
        "garbage header": "t=soon,v1=",
    }[how]
    before = snapshot(shop)
    answer = post(shop, body, signature)
    assert answer.status_code == 400 and "signature" in answer.json()["detail"].lower()
    assert snapshot(shop) == before
    # The same body, signed now with the endpoint's secret, is applied: the refusals were the signature's.
    assert post(shop, body, sign(body, shop.webhook_secret, now)).json()["applied"] is True
    assert [row[:2] for row in snapshot(shop)["checkout_keys"]] == [("cs_forged", "cus_forged")]


def test_a_replayed_webhook_changes_nothing_the_second_time(shop: Shop) -> None:
    key, session = shop.buy()
    cancel = shop.sdk.v1.subscriptions.cancel(session["subscription"])
    assert cancel.status == "canceled"
    deleted = shop.stripe.webhooks.deliveries[-1]
    assert deleted["type"] == "customer.subscription.deleted" and deleted["status"] == 200
    completed = next(d for d in shop.stripe.webhooks.deliveries if d["type"] == "checkout.session.completed")
    before = snapshot(shop)
    for event_id in (completed["event"], deleted["event"]):
        assert [d["status"] for d in shop.resend(event_id)] == [200]
        raw = json.dumps(shop.stripe.webhooks.events[event_id]).encode()
        replayed = post(shop, raw, sign(raw, shop.webhook_secret, int(time.time())))
        assert replayed.status_code == 200 and replayed.json()["applied"] is False
    assert snapshot(shop) == before
    assert len(before["api_keys"]) == 1 and predict(shop.proxy, bearer(key)).status_code == 401


def test_an_event_type_the_proxy_does_not_handle_is_acknowledged_and_ignored(shop: Shop) -> None:
    body = json.dumps(
        {"id": "evt_x", "object": "event", "type": "customer.created", "data": {"object": {}}}
    ).encode()
    before = snapshot(shop)
    answer = post(shop, body, sign(body, shop.webhook_secret, int(time.time())))
    assert answer.status_code == 200 and answer.json()["applied"] is False
    assert snapshot(shop) == before


def test_a_meter_error_report_is_logged_and_flags_the_outbox_rows_it_names(
    shop: Shop, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="modelfolio.proxy")
    with shop.stores() as stores:  # a key for a customer Stripe has never heard of
        key_id, key = new_api_key()
        stores.ledger.add_api_key(key_id, hash_key(key), "cus_ghost", "2025-06-01T00:00:00+00:00")
        mirror_subscription(stores, "cus_ghost")
    good_key, _ = shop.buy()
    lost = predict(shop.proxy, bearer(key)).json()["id"]
    fine = predict(shop.proxy, bearer(good_key)).json()["id"]

    def delivered() -> bool:
        with shop.stores() as stores:
            return stores.usage.undelivered_meter_events() == []

    wait_until(delivered, "the outbox to drain")
    report = httpx.post(f"{shop.stripe_url}/_test/billing/meter_error_report").json()
    assert [d["status"] for d in report["deliveries"]] == [200]
    with shop.stores() as stores:
        assert stores.stripe.meter_error_flags() == [(lost, "meter_event_customer_not_found")]
    (line,) = [json.loads(m) for m in caplog.messages if "stripe_meter_error_report" in m]
    assert line["identifiers"] == [lost] and line["outbox_rows_flagged"] == 1
    assert fine not in line["identifiers"]
    assert any(
        r.levelno == logging.ERROR and "stripe_meter_error_report" in r.getMessage() for r in caplog.records
    )
    before = snapshot(shop)
    assert shop.resend(report["events"][0])[0]["status"] == 200
    assert snapshot(shop) == before

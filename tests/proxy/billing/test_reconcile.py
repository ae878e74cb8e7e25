"""`billing reconcile` survives a Stripe that refuses some calls, and does not report a
difference for events still in flight in a window ending now."""

from __future__ import annotations

import asyncio
import datetime

import stripe

from devtools.teststripe.server import State
from proxy.billing.money import meter_event_name
from proxy.billing.store import UsageStore
from tests.support.billing import MODELS, bill, catalog, now, reconciled

EVENT_NAME = meter_event_name(MODELS[0])


def send(url: str, customer: str, prediction_id: str, ms: int) -> None:
    client = stripe.StripeClient(
        "sk_test_x", base_addresses={"api": url}, http_client=stripe.RequestsClient()
    )
    client.v1.billing.meter_events.create(
        {
            "event_name": EVENT_NAME,
            "identifier": prediction_id,
            "payload": {"stripe_customer_id": customer, "value": str(ms)},
        }
    )


def test_one_refused_call_does_not_abort_reconcile(
    stripe_server: tuple[State, str], store: UsageStore
) -> None:
    state, url = stripe_server
    _meters, customers = catalog(url, customers=3)
    for i, customer in enumerate(customers):
        bill(store, f"pred_{i}", customer, MODELS[0], 100, now())
        send(url, customer, f"pred_{i}", 100)
        store.mark_delivered([f"pred_{i}"], (now() - datetime.timedelta(hours=1)).isoformat())
    state.faults.set(paths=("/v1/billing/meters",))
    state.faults.force("rate_limit", "error", "rate_limit", "lose_response")
    differences, pairs = asyncio.run(reconciled(store, url, customers))
    assert differences == [] and pairs == 6
    assert state.calls["rate_limit"] == 2 and state.calls["error"] == 1  # the faults did happen


def test_events_in_flight_in_a_window_ending_now_are_not_differences(
    stripe_server: tuple[State, str], store: UsageStore
) -> None:
    _state, url = stripe_server
    _meters, (alice, bob) = catalog(url, customers=2)
    bill(store, "pred_sent", alice, MODELS[0], 1250, now())
    send(url, alice, "pred_sent", 1250)  # Stripe has it; its answer is still on the way
    bill(store, "pred_summing", bob, MODELS[0], 30, now())
    store.mark_delivered(["pred_summing"], now().isoformat())  # delivered now; Stripe lost it?
    notes: list[str] = []
    differences, _pairs = asyncio.run(reconciled(store, url, [alice, bob], notes=notes))
    assert differences == []
    assert any(note.startswith(f"IN FLIGHT {alice}") for note in notes)
    assert any(note.startswith(f"IN FLIGHT {bob}") for note in notes)

    store.mark_delivered(["pred_sent"], now().isoformat())
    with_settled_bob = now() + datetime.timedelta(hours=1)  # an hour on, Stripe should have summed it
    differences, _pairs = asyncio.run(reconciled(store, url, [alice, bob], at=with_settled_bob))
    assert [(d.customer, d.ledger_ms, d.stripe_ms) for d in differences] == [(bob, 30, 0)]

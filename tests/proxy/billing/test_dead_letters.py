"""Dead letters are resent only after Stripe's totals show it lacks them: an event Stripe has is
marked delivered, one it lacks goes out again under a new identifier, once, and a minute nobody
can read is held for a person."""

from __future__ import annotations

import asyncio
import datetime

import stripe

from devtools.teststripe.server import State
from proxy.billing import dead_letters, stripe_api
from proxy.billing.money import meter_event_name
from proxy.billing.store import UsageStore
from proxy.config import BillingConfig
from tests.support.billing import MODELS, bill, catalog, drain, ledger_totals, now, stripe_totals

EVENT_NAME = meter_event_name(MODELS[0])


def resend(store: UsageStore, url: str) -> list[dead_letters.Outcome]:
    async def run() -> list[dead_letters.Outcome]:
        connection = stripe_api.connect(
            "sk_test_ops", BillingConfig(stripe_api_base=url, stripe_meter_events_base=url)
        )
        try:
            return await dead_letters.resend(connection.client, store, store.dead_letters(), now())
        finally:
            await connection.aclose()

    return asyncio.run(run())


def at_stripe_already(url: str, customer: str, prediction_id: str, ms: int, when: datetime.datetime) -> None:
    client = stripe.StripeClient(
        "sk_test_x", base_addresses={"api": url}, http_client=stripe.RequestsClient()
    )
    client.v1.billing.meter_events.create(
        {
            "event_name": EVENT_NAME,
            "identifier": prediction_id,
            "payload": {"stripe_customer_id": customer, "value": str(ms)},
            "timestamp": int(when.timestamp()),
        }
    )


def kill(store: UsageStore, *prediction_ids: str) -> None:
    for prediction_id in prediction_ids:
        store.dead_letter(
            prediction_id, "not confirmed by Stripe 23 h after its first attempt", now().isoformat()
        )


def test_a_resend_sends_only_what_stripe_lacks_and_marks_delivered_what_it_has(
    stripe_server: tuple[State, str], store: UsageStore
) -> None:
    state, url = stripe_server
    meters, (alice,) = catalog(url, customers=1)
    has, lacks = now() - datetime.timedelta(minutes=3), now() - datetime.timedelta(minutes=2)
    bill(store, "pred_has", alice, MODELS[0], 1250, has)
    bill(store, "pred_lacks", alice, MODELS[0], 700, lacks)
    at_stripe_already(url, alice, "pred_has", 1250, has)  # its answer was lost, long ago
    kill(store, "pred_has", "pred_lacks")

    outcomes = {outcome.prediction_id: outcome.action for outcome in resend(store, url)}
    assert outcomes == {"pred_has": "found at Stripe", "pred_lacks": "resent"}
    assert resend(store, url) == []  # nothing is dead any more: a second run sends nothing
    drain(store, url)
    assert sorted(e["identifier"] for e in state.events) == ["pred_has", "pred_lacks.r1"]
    assert (
        stripe_totals(state, meters, [alice])[alice, EVENT_NAME]
        == 1950
        == ledger_totals(store)[alice, EVENT_NAME]
    )


def test_a_minute_the_totals_cannot_explain_is_held_for_a_person(
    stripe_server: tuple[State, str], store: UsageStore
) -> None:
    state, url = stripe_server
    _meters, (alice,) = catalog(url, customers=1)
    when = now().replace(second=5)
    for prediction_id in ("pred_a", "pred_b"):
        bill(store, prediction_id, alice, MODELS[0], 100, when)
    at_stripe_already(url, alice, "pred_a", 100, when)  # one of two equal events: which one?
    kill(store, "pred_a", "pred_b")
    outcomes = resend(store, url)
    assert {o.action for o in outcomes} == {"held"} and "no set of these explains it" in outcomes[0].why
    assert len(store.dead_letters()) == 2 and len(state.events) == 1

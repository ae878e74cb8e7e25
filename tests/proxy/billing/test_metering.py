"""Every succeeded prediction reaches Stripe exactly once, whatever the test Stripe does to the
calls: the real `stripe` SDK, the proxy's own ledger and worker, and the test Stripe on loopback."""

from __future__ import annotations

import asyncio
import collections
import datetime
import random
import time

import pytest
import stripe

from devtools.teststripe.server import State
from proxy.billing.metering import MeterWorker
from proxy.billing.money import meter_event_name
from proxy.billing.store import UsageStore
from tests.support.billing import (
    MODELS,
    Clock,
    bill,
    catalog,
    drain,
    ledger_totals,
    now,
    reconciled,
    stripe_totals,
    worker,
)


def test_a_thousand_events_through_30_percent_errors_and_5_percent_timeouts_arrive_once_each(
    stripe_server: tuple[State, str], store: UsageStore
) -> None:
    state, url = stripe_server
    meters, customers = catalog(url, customers=20)
    rng = random.Random(5)
    sent: collections.Counter[tuple[str, str]] = collections.Counter()
    for i in range(1000):
        customer, model, ms = rng.choice(customers), rng.choice(MODELS), rng.randint(1, 5000)
        bill(store, f"pred_{i:04d}", customer, model, ms, now())
        sent[customer, meter_event_name(model)] += ms
    state.faults.set(error=0.30, timeout=0.05, hang_s=1.3)

    started = time.perf_counter()
    meter_worker = drain(store, url, timeout_s=1.0)
    elapsed = time.perf_counter() - started

    assert store.undelivered_meter_events() == [] and store.dead_meter_events() == []
    identifiers = collections.Counter(event["identifier"] for event in state.events)
    assert len(identifiers) == 1000 and set(identifiers.values()) == {1}  # none lost, none twice
    stripe_side = {pair: total for pair, total in stripe_totals(state, meters, customers).items() if total}
    assert stripe_side == ledger_totals(store) == dict(sent)
    assert state.calls["error"] > 200 and state.calls["timeout"] > 30  # the faults really happened
    state.faults.set(error=0, timeout=0)
    differences, pairs = asyncio.run(reconciled(store, url, customers))
    assert differences == [] and pairs == 40
    print(
        f"\n1000 events, {meter_worker.stats['calls']} calls, {dict(state.calls)}: "
        f"{elapsed:.2f} s, {1000 / elapsed:.0f} events/s"
    )


@pytest.mark.parametrize("mode", ["drop", "500"])
def test_an_event_stored_whose_answer_was_lost_is_not_billed_twice(
    stripe_server: tuple[State, str], store: UsageStore, mode: str
) -> None:
    state, url = stripe_server
    meters, customers = catalog(url, customers=1)
    for i in range(5):
        bill(store, f"pred_{i}", customers[0], MODELS[0], 100, now())
    state.faults.set(lose_mode=mode)
    state.faults.force(*["lose_response"] * 5)
    meter_worker = drain(store, url)
    assert state.calls["lose_response"] == 5 and meter_worker.stats["retries"] == 5
    assert sorted(event["identifier"] for event in state.events) == [f"pred_{i}" for i in range(5)]
    assert stripe_totals(state, meters, customers)[customers[0], meter_event_name(MODELS[0])] == 500
    assert store.undelivered_meter_events() == []


def test_an_event_stripe_already_has_counts_as_delivered(
    stripe_server: tuple[State, str], store: UsageStore
) -> None:
    state, url = stripe_server
    _meters, customers = catalog(url, customers=1)
    bill(store, "pred_1", customers[0], MODELS[0], 1250, now())
    client = stripe.StripeClient(
        "sk_test_x", base_addresses={"api": url}, http_client=stripe.RequestsClient()
    )
    # As if an earlier worker delivered it and died before marking it delivered.
    client.v1.billing.meter_events.create(
        {
            "event_name": meter_event_name(MODELS[0]),
            "identifier": "pred_1",
            "payload": {"stripe_customer_id": customers[0], "value": "1250"},
        }
    )
    meter_worker = drain(store, url)
    assert meter_worker.stats["duplicates"] == 1 and store.undelivered_meter_events() == []
    assert ledger_totals(store) == {(customers[0], meter_event_name(MODELS[0])): 1250}
    assert len(state.events) == 1


def test_events_stripe_can_never_take_go_to_the_dead_letter_table(
    stripe_server: tuple[State, str], store: UsageStore
) -> None:
    state, url = stripe_server
    _meters, customers = catalog(url, customers=1)
    bill(store, "pred_old", customers[0], MODELS[0], 10, now() - datetime.timedelta(days=36))
    bill(store, "p" * 101, customers[0], MODELS[0], 10, now())  # Stripe: identifier too long
    bill(store, "pred_ok", customers[0], MODELS[0], 10, now())
    meter_worker = drain(store, url)
    dead = dict(store.dead_meter_events())
    assert set(dead) == {"pred_old", "p" * 101}
    assert "35-day" in dead["pred_old"] and "400" in dead["p" * 101]
    assert state.calls.get("POST /v1/billing/meter_events") == 2  # the old one was never sent
    assert [event["identifier"] for event in state.events] == ["pred_ok"]
    assert meter_worker.stats["dead_lettered"] == 2 and store.undelivered_meter_events() == []


def test_one_customers_failing_events_do_not_hold_back_anothers(
    stripe_server: tuple[State, str], store: UsageStore
) -> None:
    state, url = stripe_server
    _meters, customers = catalog(url, customers=2)
    for i, customer in enumerate(customers):
        bill(store, f"pred_{i}", customer, MODELS[0], 10, now())
    state.faults.force("error")  # whichever lane calls first fails and backs off

    async def run() -> None:
        # One call slot for both lanes: a lane that held it while backing off would deadlock.
        meter_worker, connection = worker(store, url, concurrency=1)

        async def backoff(seconds: float) -> None:
            while not state.events:  # noqa: ASYNC110 -- yields until the other lane's event lands
                await asyncio.sleep(0)

        meter_worker._sleep = backoff
        try:
            await asyncio.wait_for(meter_worker.drain_once(), 30)
        finally:
            await connection.aclose()

    asyncio.run(run())
    assert sorted(e["identifier"] for e in state.events) == ["pred_0", "pred_1"]
    assert store.undelivered_meter_events() == []


def test_an_event_unconfirmed_23_hours_after_its_first_attempt_is_dead_lettered_not_resent(
    stripe_server: tuple[State, str], store: UsageStore, clock: Clock
) -> None:
    # Stripe takes the event but the answer is lost; then it refuses every call for a day (429s,
    # before its idempotency layer). A retry after 24 h would be a second event: Stripe no longer
    # knows the identifier, nor the idempotency key.
    state, url = stripe_server
    _meters, customers = catalog(url, customers=1)
    bill(store, "pred_1", customers[0], MODELS[0], 1250, now())
    state.faults.set(rate_limit=1.0)
    state.faults.force("lose_response")

    async def an_hour_passes(_seconds: float) -> None:
        clock.offset_s += 3600  # the worker's clock and Stripe's
        if clock.offset_s > 25 * 3600:
            state.faults.set(rate_limit=0)  # Stripe is back, and has forgotten the identifier
        await asyncio.sleep(0)

    async def run() -> MeterWorker:
        meter_worker, connection = worker(store, url, sleep=an_hour_passes, clock=lambda: now() + offset())
        try:
            await asyncio.wait_for(meter_worker.drain_once(), 20)
        finally:
            await connection.aclose()
        return meter_worker

    def offset() -> datetime.timedelta:
        return datetime.timedelta(seconds=clock.offset_s)

    meter_worker = asyncio.run(run())
    assert [event["identifier"] for event in state.events] == ["pred_1"]  # counted once, by the lost call
    ((dead, reason),) = store.dead_meter_events()
    assert dead == "pred_1" and "23 h after its first attempt" in reason and "dead-letters resend" in reason
    assert meter_worker.stats["dead_lettered"] == 1 and clock.offset_s <= 24 * 3600


def test_an_old_event_never_sent_from_this_ledger_is_not_sent_blind(
    stripe_server: tuple[State, str], store: UsageStore, clock: Clock
) -> None:
    # A ledger restored from a backup taken before the event went out: Stripe had it a day ago.
    state, url = stripe_server
    _meters, customers = catalog(url, customers=1)
    made = now()
    bill(store, "pred_1", customers[0], MODELS[0], 1250, made)
    event = {
        "event_name": meter_event_name(MODELS[0]),
        "identifier": "pred_1",
        "timestamp": int(made.timestamp()),
    }
    sdk = stripe.StripeClient("sk_test_x", base_addresses={"api": url}, http_client=stripe.RequestsClient())
    sdk.v1.billing.meter_events.create(
        {**event, "payload": {"stripe_customer_id": customers[0], "value": "1250"}}
    )
    clock.offset_s = 30 * 3600
    drain(store, url, clock=lambda: now() + datetime.timedelta(seconds=clock.offset_s))
    assert len(state.events) == 1 and state.calls["POST /v1/billing/meter_events"] == 1  # not sent again
    ((_, reason),) = store.dead_meter_events()
    assert "never sent from this ledger" in reason


def test_a_duplicate_is_known_by_stripes_error_code_whatever_its_words(
    stripe_server: tuple[State, str], store: UsageStore
) -> None:
    state, url = stripe_server
    _meters, customers = catalog(url, customers=1)
    bill(store, "pred_1", customers[0], MODELS[0], 1250, now())
    client = stripe.StripeClient(
        "sk_test_x", base_addresses={"api": url}, http_client=stripe.RequestsClient()
    )
    payload = {"stripe_customer_id": customers[0], "value": "1250"}
    client.v1.billing.meter_events.create(
        {"event_name": meter_event_name(MODELS[0]), "identifier": "pred_1", "payload": payload}
    )
    state.duplicate_message = "A meter event with a duplicate identifier has already been submitted."
    meter_worker = drain(store, url)
    assert meter_worker.stats["duplicates"] == 1 and store.dead_meter_events() == []
    assert ledger_totals(store) == {(customers[0], meter_event_name(MODELS[0])): 1250}


def test_a_clock_minutes_ahead_of_stripes_delays_events_instead_of_killing_them(
    stripe_server: tuple[State, str], store: UsageStore, clock: Clock
) -> None:
    state, url = stripe_server
    _meters, customers = catalog(url, customers=1)
    clock.offset_s = -6 * 60  # Stripe's clock is 6 minutes behind ours: 1 more than it allows
    for i in range(3):
        bill(store, f"pred_{i}", customers[0], MODELS[0], 100, now())

    async def a_minute_passes(_seconds: float) -> None:
        clock.offset_s += 60
        await asyncio.sleep(0)

    drain(store, url, sleep=a_minute_passes)
    assert store.dead_meter_events() == [] and store.undelivered_meter_events() == []
    assert sorted(event["identifier"] for event in state.events) == ["pred_0", "pred_1", "pred_2"]

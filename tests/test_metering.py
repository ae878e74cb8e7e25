"""Every succeeded prediction reaches Stripe exactly once, whatever the test Stripe does to the
calls: the real `stripe` SDK, the proxy's own ledger and worker, and the test Stripe on loopback."""

from __future__ import annotations

import asyncio
import collections
import datetime
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
import stripe

from proxy import stripe_api
from proxy.billing import meter_event_name
from proxy.config import BillingConfig
from proxy.ledger import Ledger, Usage
from proxy.metering import MeterWorker
from proxy.reconcile import reconcile
from tests.servers import serve
from tests.stripe_server import State, create_app

MODELS = ("modelfolio/digits", "modelfolio/cats")


@pytest.fixture
def stripe_server() -> Iterator[tuple[State, str]]:
    app = create_app(seed=42)
    with serve(app) as url:
        yield app.state.stripe, url


def catalog(url: str, customers: int) -> tuple[dict[str, str], list[str]]:
    """Meters per model and customers, made with the SDK as an operator would."""
    client = stripe.StripeClient(
        "sk_test_setup", base_addresses={"api": url}, http_client=stripe.RequestsClient()
    )
    meters = {}
    for model in MODELS:
        name = meter_event_name(model)
        meters[name] = client.v1.billing.meters.create(
            {"display_name": model, "event_name": name, "default_aggregation": {"formula": "sum"}}
        ).id
    return meters, [client.v1.customers.create({"name": f"c{i}"}).id for i in range(customers)]


def bill(
    ledger: Ledger, prediction_id: str, customer: str, model: str, ms: int, at: datetime.datetime
) -> None:
    usage = Usage(
        prediction_id=prediction_id,
        caller="key_x",
        stripe_customer=customer,
        model=model,
        version=None,
        predict_time_ms=ms,
        price_per_second="0.0005",
        amount="0",
        created_at=at.isoformat(timespec="microseconds"),
    )
    ledger.record_usage(usage, meter_event_name(model))


def worker(ledger: Ledger, url: str, *, timeout_s: float = 5.0, **options: Any) -> tuple[MeterWorker, Any]:
    billing = BillingConfig(
        stripe_api_base=url, stripe_meter_events_base=url, timeout_s=timeout_s, concurrency=32
    )
    connection = stripe_api.connect("sk_test_worker", billing)
    defaults: dict[str, Any] = {
        "concurrency": 32,
        "backoff_base_s": 0.001,
        "backoff_max_s": 0.02,
        "rng": random.Random(1),
    }
    return MeterWorker(ledger, connection.client, **{**defaults, **options}), connection


def drain(ledger: Ledger, url: str, **options: Any) -> MeterWorker:
    async def run() -> MeterWorker:
        meter_worker, connection = worker(ledger, url, **options)
        try:
            await meter_worker.drain_once()
        finally:
            await connection.aclose()
        return meter_worker

    return asyncio.run(run())


def stripe_totals(state: State, meters: dict[str, str], customers: list[str]) -> dict[tuple[str, str], int]:
    now = int(time.time())
    return {
        (customer, name): int(state.aggregated(meter, customer, now - 86400, now + 3600))
        for name, meter in meters.items()
        for customer in customers
    }


def ledger_totals(ledger: Ledger) -> dict[tuple[str, str], int]:
    return ledger.delivered_meter_totals("0", "9")


async def reconciled(ledger: Ledger, url: str, customers: list[str]) -> tuple[list[Any], int]:
    billing = BillingConfig(stripe_api_base=url, stripe_meter_events_base=url)
    connection = stripe_api.connect("sk_test_reconcile", billing)
    try:
        return await reconcile(
            connection.client, ledger, now() - datetime.timedelta(hours=1), now(), set(customers)
        )
    finally:
        await connection.aclose()


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def test_a_thousand_events_through_30_percent_errors_and_5_percent_timeouts_arrive_once_each(
    stripe_server: tuple[State, str], ledger: Ledger
) -> None:
    state, url = stripe_server
    meters, customers = catalog(url, customers=20)
    rng = random.Random(5)
    sent: collections.Counter[tuple[str, str]] = collections.Counter()
    for i in range(1000):
        customer, model, ms = rng.choice(customers), rng.choice(MODELS), rng.randint(1, 5000)
        bill(ledger, f"pred_{i:04d}", customer, model, ms, now())
        sent[customer, meter_event_name(model)] += ms
    state.faults.set(error=0.30, timeout=0.05, hang_s=0.4)

    started = time.perf_counter()
    meter_worker = drain(ledger, url, timeout_s=0.15)
    elapsed = time.perf_counter() - started

    assert ledger.undelivered_meter_events() == [] and ledger.dead_meter_events() == []
    identifiers = collections.Counter(event["identifier"] for event in state.events)
    assert len(identifiers) == 1000 and set(identifiers.values()) == {1}  # none lost, none twice
    stripe_side = {pair: total for pair, total in stripe_totals(state, meters, customers).items() if total}
    assert stripe_side == ledger_totals(ledger) == dict(sent)
    assert state.calls["error"] > 200 and state.calls["timeout"] > 30  # the faults really happened
    state.faults.set(error=0, timeout=0)
    differences, pairs = asyncio.run(reconciled(ledger, url, customers))
    assert differences == [] and pairs == 40
    print(
        f"\n1000 events, {meter_worker.stats['calls']} calls, {dict(state.calls)}: "
        f"{elapsed:.2f} s, {1000 / elapsed:.0f} events/s"
    )


@pytest.mark.parametrize("mode", ["drop", "500"])
def test_an_event_stored_whose_answer_was_lost_is_not_billed_twice(
    stripe_server: tuple[State, str], ledger: Ledger, mode: str
) -> None:
    state, url = stripe_server
    meters, customers = catalog(url, customers=1)
    for i in range(5):
        bill(ledger, f"pred_{i}", customers[0], MODELS[0], 100, now())
    state.faults.set(lose_mode=mode)
    state.faults.force(*["lose_response"] * 5)
    meter_worker = drain(ledger, url)
    assert state.calls["lose_response"] == 5 and meter_worker.stats["retries"] == 5
    assert sorted(event["identifier"] for event in state.events) == [f"pred_{i}" for i in range(5)]
    assert stripe_totals(state, meters, customers)[customers[0], meter_event_name(MODELS[0])] == 500
    assert ledger.undelivered_meter_events() == []


def test_an_event_stripe_already_has_counts_as_delivered(
    stripe_server: tuple[State, str], ledger: Ledger
) -> None:
    state, url = stripe_server
    _meters, customers = catalog(url, customers=1)
    bill(ledger, "pred_1", customers[0], MODELS[0], 1250, now())
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
    meter_worker = drain(ledger, url)
    assert meter_worker.stats["duplicates"] == 1 and ledger.undelivered_meter_events() == []
    assert ledger_totals(ledger) == {(customers[0], meter_event_name(MODELS[0])): 1250}
    assert len(state.events) == 1


def test_events_stripe_can_never_take_go_to_the_dead_letter_table(
    stripe_server: tuple[State, str], ledger: Ledger
) -> None:
    state, url = stripe_server
    _meters, customers = catalog(url, customers=1)
    bill(ledger, "pred_old", customers[0], MODELS[0], 10, now() - datetime.timedelta(days=36))
    bill(ledger, "p" * 101, customers[0], MODELS[0], 10, now())  # Stripe: identifier too long
    bill(ledger, "pred_ok", customers[0], MODELS[0], 10, now())
    meter_worker = drain(ledger, url)
    dead = dict(ledger.dead_meter_events())
    assert set(dead) == {"pred_old", "p" * 101}
    assert "35-day" in dead["pred_old"] and "400" in dead["p" * 101]
    assert state.calls.get("POST /v1/billing/meter_events") == 2  # the old one was never sent
    assert [event["identifier"] for event in state.events] == ["pred_ok"]
    assert meter_worker.stats["dead_lettered"] == 2 and ledger.undelivered_meter_events() == []


def test_one_customers_failing_events_do_not_hold_back_anothers(
    stripe_server: tuple[State, str], ledger: Ledger
) -> None:
    state, url = stripe_server
    _meters, customers = catalog(url, customers=2)
    for i, customer in enumerate(customers):
        bill(ledger, f"pred_{i}", customer, MODELS[0], 10, now())
    state.faults.force("error")  # whichever lane calls first fails and backs off

    async def run() -> None:
        # One call slot for both lanes: a lane that held it while backing off would deadlock.
        meter_worker, connection = worker(ledger, url, concurrency=1)

        async def backoff(seconds: float) -> None:
            while not state.events:  # the other customer's event lands while this one waits
                await asyncio.sleep(0)

        meter_worker._sleep = backoff
        try:
            await asyncio.wait_for(meter_worker.drain_once(), 30)
        finally:
            await connection.aclose()

    asyncio.run(run())
    assert sorted(e["identifier"] for e in state.events) == ["pred_0", "pred_1"]
    assert ledger.undelivered_meter_events() == []

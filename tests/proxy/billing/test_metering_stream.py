"""A large backlog reaches Stripe through the v2 meter event stream, still exactly once: the real
`stripe` SDK, the proxy's ledger and worker, and the test Stripe on loopback."""

from __future__ import annotations

import asyncio
import collections
import datetime
import random
from collections.abc import Callable
from typing import Any

import pytest

from devtools.teststripe.server import State
from proxy.billing import metering
from proxy.billing.metering import MeterWorker
from proxy.billing.money import meter_event_name
from proxy.billing.store import UsageStore
from proxy.config import BillingConfig
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

SESSIONS = "POST /v2/billing/meter_event_session"
STREAM = "POST /v2/billing/meter_event_stream"
V1 = "POST /v1/billing/meter_events"


def backlog(
    store: UsageStore, customers: list[str], n: int, *, start: int = 0, seed: int = 5
) -> dict[Any, int]:
    rng = random.Random(seed)
    sent: collections.Counter[tuple[str, str]] = collections.Counter()
    for i in range(start, start + n):
        customer, model, ms = rng.choice(customers), rng.choice(MODELS), rng.randint(1, 5000)
        bill(store, f"pred_{i:05d}", customer, model, ms, now())
        sent[customer, meter_event_name(model)] += ms
    return dict(sent)


def once_each(state: State) -> collections.Counter[str]:
    return collections.Counter(event["identifier"] for event in state.events)


def test_two_thousand_streamed_events_through_30_percent_errors_and_5_percent_timeouts_arrive_once_each(
    stripe_server: tuple[State, str], store: UsageStore
) -> None:
    state, url = stripe_server
    meters, customers = catalog(url, customers=20)
    sent = backlog(store, customers, 2000)
    # Each kind at least once whatever the draws, then 30 % errors and 5 % hangs past the timeout,
    # on session and stream calls alike.
    state.faults.force("error", "timeout", "rate_limit", "lose_response")
    state.faults.set(error=0.30, timeout=0.05, hang_s=1.3)

    meter_worker = drain(store, url, timeout_s=1.0, stream_above=200)

    assert store.undelivered_meter_events() == [] and store.dead_meter_events() == []
    identifiers = once_each(state)
    assert len(identifiers) == 2000 and set(identifiers.values()) == {1}  # none lost, none twice
    stripe_side = {pair: total for pair, total in stripe_totals(state, meters, customers).items() if total}
    assert stripe_side == ledger_totals(store) == sent
    assert state.calls.get(V1, 0) == 0 and state.calls[STREAM] >= 20  # 100 events a call
    assert state.calls["error"] >= 1 and state.calls["timeout"] >= 1 and meter_worker.stats["retries"] >= 4
    state.faults.set(error=0, timeout=0)
    differences, pairs = asyncio.run(reconciled(store, url, customers))
    assert differences == [] and pairs == 40
    print(
        f"\n2000 events through the stream: {meter_worker.stats['stream_calls']} calls, {dict(state.calls)}"
    )


def drain_twice(store: UsageStore, url: str, between: Callable[[], None], **options: Any) -> MeterWorker:
    """One worker drains, `between` runs, more usage arrives, the same worker drains again."""

    async def run() -> MeterWorker:
        meter_worker, connection = worker(store, url, stream_above=200, **options)
        try:
            await meter_worker.drain_once()
            between()
            await meter_worker.drain_once()
        finally:
            await connection.aclose()
        return meter_worker

    return asyncio.run(run())


def test_a_session_stripe_says_has_expired_is_renewed_and_nothing_is_lost(
    stripe_server: tuple[State, str], store: UsageStore, clock: Clock
) -> None:
    state, url = stripe_server
    _meters, customers = catalog(url, customers=3)
    backlog(store, customers, 300)

    def later() -> None:
        clock.offset_s += 16 * 60  # Stripe's clock passes the token's 15 minutes; ours does not
        backlog(store, customers, 300, start=300, seed=6)

    meter_worker = drain_twice(store, url, later)

    assert meter_worker.stats["sessions_expired"] >= 1 and state.calls[SESSIONS] == 2
    identifiers = once_each(state)
    assert len(identifiers) == 600 and set(identifiers.values()) == {1}
    assert store.undelivered_meter_events() == []


def test_a_session_is_renewed_before_it_expires(stripe_server: tuple[State, str], store: UsageStore) -> None:
    state, url = stripe_server
    _meters, customers = catalog(url, customers=3)
    backlog(store, customers, 300)
    moments = [datetime.datetime.now(datetime.UTC)]

    def later() -> None:
        moments[0] += datetime.timedelta(minutes=14, seconds=30)  # within a minute of expiry
        backlog(store, customers, 300, start=300, seed=6)

    meter_worker = drain_twice(store, url, later, clock=lambda: moments[0])

    assert state.calls[SESSIONS] == 2 and meter_worker.stats["sessions_expired"] == 0
    assert len(once_each(state)) == 600 and store.undelivered_meter_events() == []


@pytest.mark.parametrize("mode", ["drop", "500"])
def test_a_batch_stored_whose_answer_was_lost_is_not_billed_twice(
    stripe_server: tuple[State, str], store: UsageStore, mode: str
) -> None:
    state, url = stripe_server
    meters, customers = catalog(url, customers=2)
    sent = backlog(store, customers, 300)
    state.faults.set(lose_mode=mode)
    state.faults.force("", "lose_response", "lose_response")  # the session call goes through

    meter_worker = drain(store, url, stream_above=200)

    assert state.calls["lose_response"] == 2 and meter_worker.stats["retries"] == 2
    identifiers = once_each(state)
    assert len(identifiers) == 300 and set(identifiers.values()) == {1}
    stripe_side = {pair: total for pair, total in stripe_totals(state, meters, customers).items() if total}
    assert stripe_side == ledger_totals(store) == sent
    # The two batches came twice; Stripe dropped the second copies by their identifiers.
    assert sum("already exists" in report["message"] for report in state.error_reports) == 200


def test_a_small_backlog_keeps_to_one_v1_call_per_event(
    stripe_server: tuple[State, str], store: UsageStore
) -> None:
    state, url = stripe_server
    _meters, customers = catalog(url, customers=2)
    backlog(store, customers, 200)

    drain(store, url, stream_above=200)

    assert state.calls[V1] == 200 and SESSIONS not in state.calls and STREAM not in state.calls
    assert len(once_each(state)) == 200


def test_events_the_stream_cannot_take_still_get_stripes_answer_through_v1(
    stripe_server: tuple[State, str], store: UsageStore
) -> None:
    state, url = stripe_server
    _meters, customers = catalog(url, customers=1)
    backlog(store, customers, 250)
    bill(store, "pred_old", customers[0], MODELS[0], 10, now() - datetime.timedelta(days=36))
    bill(store, "p" * 101, customers[0], MODELS[0], 10, now())  # Stripe: identifier too long

    drain(store, url, stream_above=200)

    assert set(dict(store.dead_meter_events())) == {"pred_old", "p" * 101}
    assert state.calls[V1] == 1 and state.calls[STREAM] == 3  # the old one was never sent
    assert len(once_each(state)) == 250 and store.undelivered_meter_events() == []


def test_a_batch_the_stream_refuses_whole_goes_through_v1_instead(
    stripe_server: tuple[State, str], store: UsageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, url = stripe_server
    _meters, customers = catalog(url, customers=2)
    backlog(store, customers, 202)
    monkeypatch.setattr(metering, "STREAM_BATCH", 101)  # one more than the stream takes: a 400

    drain(store, url, stream_above=200)

    assert state.calls[STREAM] == 2 and state.calls[V1] == 202  # both batches refused, then v1
    identifiers = once_each(state)
    assert len(identifiers) == 202 and set(identifiers.values()) == {1}
    assert store.undelivered_meter_events() == [] and store.dead_meter_events() == []


def test_the_proxy_streams_backlogs_over_200_by_default() -> None:
    assert BillingConfig().stream_above == 200
    meter_worker = MeterWorker.from_config(None, None, BillingConfig(stream_above=50))  # type: ignore[arg-type]
    assert meter_worker._stream_above == 50

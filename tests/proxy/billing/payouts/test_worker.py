"""The transfer worker against the test Stripe with its faults on: one transfer per author per
invoice, drawn on the invoice's charge, whatever fails; a worker killed between Stripe's transfer
and its ledger row, and a ledger restored from before it, send nothing twice even days later;
refunds become reversals of the same fraction; what Stripe refuses is dead-lettered."""

from __future__ import annotations

import datetime
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe

from devtools.teststripe.server import State
from proxy.billing.payouts.outbox import TransferOutbox
from proxy.billing.payouts.store import PayoutLedger
from proxy.billing.store import UsageStore
from proxy.config import REPO_ROOT
from proxy.storage import Database
from tests.support.billing import Clock
from tests.support.payday import Payday, payday, products
from tests.support.payouts import AUTHORS, CATS, DIGITS, drain_transfers, sdk, stripe_transfers

FAULTS = {"error": 0.2, "rate_limit": 0.1, "timeout": 0.05, "lose_response": 0.15, "hang_s": 2.5}
PATHS = ("/v1/transfers",)


@pytest.fixture
def paid(
    stripe_server: tuple[State, str], database: Database
) -> Iterator[tuple[State, str, Payday, Database]]:
    """4 predictions on digits and 3 on cats (12.5 cents each), invoiced, paid and recorded."""
    state, url = stripe_server
    products(url)
    ledger = PayoutLedger(database)
    day = payday(sdk(url), url, UsageStore(database), ledger, {DIGITS: 4, CATS: 3})
    ledger.record_invoice(("evt_paid", "invoice.paid"), day.paid, AUTHORS, "2026-01-02T00:00:00+00:00")
    return state, url, day, database


def sent(state: State) -> dict[str, list[int]]:
    by_author: dict[str, list[int]] = {}
    for transfer in stripe_transfers(state):
        by_author.setdefault(transfer["metadata"]["modelfolio_author"], []).append(transfer["amount"])
    return by_author


def test_each_author_gets_one_transfer_drawn_on_the_invoices_charge_through_faults(paid: Any) -> None:
    state, url, day, database = paid
    state.faults.set(seed=5, paths=PATHS, **FAULTS)
    # One call at a time, so that the first transfer's answer is the one lost: Stripe made it.
    state.faults.force("", "lose_response", "error")

    worker = drain_transfers(TransferOutbox(database), url, concurrency=1)

    assert sent(state) == {"ada": [25], "bob": [11]}  # 4 x 12.5 x 0.5 = 25; 3 x 12.5 x 0.3 = 11.25
    charge = day.paid.charge_id
    assert {(t["source_transaction"], t["transfer_group"]) for t in stripe_transfers(state)} == {
        (charge, day.invoice["id"])
    }
    assert {t["destination"] for t in stripe_transfers(state)} == set(day.accounts.values())
    assert worker.sent["found"] >= 1 and worker.sent["retries"] >= 2 and worker.sent["dead"] == 0
    ledger = {p.author: p.transfer_id for p in PayoutLedger(database).payouts_of(day.invoice["id"])}
    assert ledger == {t["metadata"]["modelfolio_author"]: t["id"] for t in stripe_transfers(state)}
    assert PayoutLedger(database).author("bob").carry == "0.0025"  # type: ignore[union-attr]


def test_a_worker_killed_after_stripes_transfer_and_before_its_row_sends_nothing_twice(
    paid: Any, clock: Clock, tmp_path: Path
) -> None:
    state, url, day, database = paid
    crashed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.support.crashing_payouts",
            f"sqlite:///{tmp_path / 'ledger.sqlite3'}",
            url,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert crashed.returncode == 17, crashed.stderr.decode()[-2000:]
    assert sum(len(v) for v in sent(state).values()) >= 1  # Stripe made one (or both); the ledger none
    assert all(p.transfer_id is None for p in PayoutLedger(database).payouts_of(day.invoice["id"]))

    # Two days on: Stripe has forgotten the idempotency keys, and the crashed worker's lease ran out.
    clock.offset_s = 2 * 86400
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2)
    state.faults.set(seed=9, paths=PATHS, **FAULTS)
    drain_transfers(TransferOutbox(database), url, clock=lambda: later)

    assert sent(state) == {"ada": [25], "bob": [11]}
    assert all(p.transfer_id for p in PayoutLedger(database).payouts_of(day.invoice["id"]))


def test_a_ledger_restored_from_before_the_transfers_finds_them_at_stripe(paid: Any, clock: Clock) -> None:
    state, url, _day, database = paid
    drain_transfers(TransferOutbox(database), url)
    with database.transaction() as cur:  # the backup was taken before the worker marked them
        cur.execute("UPDATE payouts SET transfer_id = NULL, delivered_at = NULL")
    clock.offset_s = 3 * 86400

    worker = drain_transfers(TransferOutbox(database), url)

    assert sent(state) == {"ada": [25], "bob": [11]} and worker.sent["found"] == 2


def test_a_refund_reverses_each_authors_share_once(paid: Any) -> None:
    state, url, day, database = paid
    drain_transfers(TransferOutbox(database), url)
    client, ledger = sdk(url), PayoutLedger(database)
    charge = day.paid.charge_id
    assert charge is not None and day.paid.charge_cents == 88  # 7 x 12.5 = 87.5 -> 88 cents

    client.v1.refunds.create({"charge": charge, "amount": 44})
    ledger.record_refund(("evt_half", "charge.refunded"), charge, 88, 44, "2026-01-03T00:00:00+00:00")
    ledger.record_refund(("evt_half", "charge.refunded"), charge, 88, 44, "2026-01-03T00:00:01+00:00")
    state.faults.set(seed=3, paths=PATHS, **FAULTS)
    drain_transfers(TransferOutbox(database), url)
    client.v1.refunds.create({"charge": charge})
    ledger.record_refund(("evt_rest", "charge.refunded"), charge, 88, 88, "2026-01-03T00:00:02+00:00")
    drain_transfers(TransferOutbox(database), url)

    reversed_ = {
        t["metadata"]["modelfolio_author"]: [r["amount"] for r in t["reversals"]["data"]]
        for t in stripe_transfers(state)
    }
    assert reversed_ == {"ada": [12, 13], "bob": [5, 6]}  # newest first: the rest, then half (12.5 -> 13)
    assert all(t["reversed"] for t in stripe_transfers(state))


def test_a_transfer_stripe_refuses_is_dead_lettered_and_the_rest_are_sent(paid: Any) -> None:
    state, url, day, database = paid
    with database.transaction() as cur:  # the ledger owes bob more than the charge holds
        cur.execute("UPDATE payouts SET cents = 500 WHERE author = 'bob'")

    worker = drain_transfers(TransferOutbox(database), url)

    assert sent(state) == {"ada": [25]} and worker.sent["dead"] == 1
    (bob,) = [p for p in PayoutLedger(database).payouts_of(day.invoice["id"]) if p.author == "bob"]
    assert bob.dead_at is not None and "exceeds what remains of source transaction" in (bob.dead_reason or "")
    assert TransferOutbox(database).stats().dead == 1
    with pytest.raises(stripe.InvalidRequestError):  # what the worker met, for the record
        sdk(url).v1.transfers.create(
            {
                "amount": 500,
                "currency": "usd",
                "destination": day.accounts["bob"],
                "source_transaction": bob.charge_id or "",
            }
        )

"""The whole payout flow as the owner, two authors and a customer live it, against the test
Stripe with its faults on: the owner adds the authors, ada onboards through her link; a customer
makes predictions on ada's model (half to her) and bob's (the default 30 %); the month's invoice is
paid; ada gets one transfer, bob's share waits until he onboards; replays change nothing; a
refund reverses both shares; `billing reconcile` finds the ledger and Stripe agree to the cent."""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.billing.payouts.outbox import TransferOutbox
from proxy.billing.payouts.store import PayoutLedger
from proxy.billing.store import UsageStore
from proxy.cli import main
from proxy.storage import open_database
from tests.support.billing import wait_until
from tests.support.payday import Payroll, open_payroll, subscribe
from tests.support.payouts import CATS, DIGITS, charge_of, invoice_period, stripe_transfers
from tests.support.proxy import issue_key

CALLS = (
    "/v1/transfers",
    "/v1/invoices",
    "/v1/invoice_payments",
    "/v1/payment_intents",
    "/v1/charges",
    "/v1/prices",
    "/v1/accounts",
)


@pytest.fixture
def payroll(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Payroll]:
    with open_payroll(tmp_path) as opened:
        for name, value in opened.environ.items():
            monkeypatch.setenv(name, value)
        yield opened


def owner(payroll: Payroll, *command: str) -> int:
    return main([*command, "--config-dir", str(payroll.config_dir)])


def net_transfers(payroll: Payroll) -> dict[str, int]:
    return {
        t["metadata"]["modelfolio_author"]: t["amount"] - t["amount_reversed"]
        for t in stripe_transfers(payroll.stripe)
    }


def test_authors_are_paid_their_share_once_through_faults_replays_a_late_onboarding_and_a_refund(
    payroll: Payroll, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = open_database(payroll.ledger_url)
    ledger, outbox = PayoutLedger(database), TransferOutbox(database)
    assert owner(payroll, "authors", "add", "ada", "--email", "ada@example.com") == 0
    assert owner(payroll, "authors", "add", "bob", "--email", "bob@example.com") == 0
    assert owner(payroll, "authors", "onboard", "ada") == 0
    link = re.search(r"http://\S+/setup/e/\S+", capsys.readouterr().out)
    assert link is not None
    assert httpx.get(link.group(0)).status_code == 200
    httpx.post(link.group(0))  # ada submits her details; Stripe tells the proxy
    ada, bob = ledger.author("ada"), ledger.author("bob")
    assert ada is not None and bob is not None and ada.payouts_enabled and not bob.payouts_enabled

    customer, subscription = subscribe(payroll.sdk)
    payroll.delivered(payroll.event("customer.subscription.created", subscription))  # what it pays for
    key = issue_key(tmp_path, customer)
    start = datetime.datetime.now(datetime.UTC).replace(second=0, microsecond=0)
    for model, count in ((DIGITS, 4), (CATS, 3)):  # 2.5 s at $0.05/s: 12.5 cents each
        for _ in range(count):
            assert payroll.predict(model, key)["billing"]["amount"] == "0.125"
    wait_until(lambda: UsageStore(database).outbox_stats().backlog == 0, "the meter events to reach Stripe")

    payroll.stripe.faults.set(
        seed=4, error=0.15, rate_limit=0.1, lose_response=0.1, timeout=0.03, hang_s=2.5, paths=CALLS
    )
    invoice = invoice_period(payroll.stripe_url, subscription, start, start + datetime.timedelta(minutes=5))
    paid = payroll.event("invoice.paid", invoice["invoice"]["id"])
    payroll.delivered(paid)
    wait_until(lambda: net_transfers(payroll).get("ada") == 25, "ada's transfer")  # 4 x 12.5 x 0.5

    assert net_transfers(payroll) == {"ada": 25}  # bob cannot be paid yet: his 11 cents wait
    assert outbox.stats().held_cents == 11
    httpx.post(f"{payroll.stripe_url}/_test/events/{paid}/resend")  # Stripe sends it again
    httpx.post(f"{payroll.stripe_url}/_test/events/{paid}/resend")

    httpx.post(f"{payroll.stripe_url}/_test/accounts/{bob.account_id}/onboard")
    payroll.delivered(payroll.event("account.updated", str(bob.account_id)))
    wait_until(lambda: net_transfers(payroll).get("bob") == 11, "bob's transfer, once he can be paid")

    payroll.stripe.faults.set(
        error=0.0, rate_limit=0.0, lose_response=0.0, timeout=0.0
    )  # the test's own calls
    charge = charge_of(payroll.sdk, invoice["invoice"]["id"])
    assert charge.amount == 88  # 87.5 cents, rounded by Stripe
    payroll.sdk.v1.refunds.create({"charge": charge.id, "amount": 44})
    payroll.stripe.faults.set(seed=8, error=0.15, rate_limit=0.1, lose_response=0.1, timeout=0.03)
    payroll.delivered(payroll.event("charge.refunded", charge.id))
    wait_until(lambda: net_transfers(payroll) == {"ada": 12, "bob": 5}, "half of each share reversed")
    httpx.post(f"{payroll.stripe_url}/_test/events/{payroll.event('charge.refunded', charge.id)}/resend")

    payroll.stripe.faults.set(error=0.0, rate_limit=0.0, lose_response=0.0, timeout=0.0)
    assert sum(payroll.stripe.calls.get(kind, 0) for kind in ("error", "rate_limit", "lose_response")) > 5
    wait_until(lambda: outbox.stats().transfers_waiting + outbox.stats().reversals_waiting == 0, "the outbox")
    capsys.readouterr()
    assert owner(payroll, "billing", "reconcile") == 0
    report = capsys.readouterr().out
    assert (
        "2 author payouts compared: ledger 17 cents, Stripe 17 cents net of reversals; 0 difference(s)"
        in report
    )
    assert [len(t["reversals"]["data"]) for t in stripe_transfers(payroll.stripe)] == [1, 1]  # nothing twice
    assert owner(payroll, "authors", "list") == 0
    listing = capsys.readouterr().out
    assert re.search(r"ada\s+acct_\S+\s+on\s+\$0\.12\s+\$0\.00\s+modelfolio/digits", listing), listing
    assert re.search(r"bob\s+acct_\S+\s+on\s+\$0\.05\s+\$0\.00\s+modelfolio/cats", listing), listing
    database.close()

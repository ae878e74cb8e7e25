"""The whole money flow as its people live it, against the test Stripe with its faults on: a buyer
gets a key through Checkout, runs predictions on two models until the monthly cap they set stops
them, the meter events reach Stripe, the month's invoice is paid, each model's author gets one
transfer of their share, the customer is refunded half and each share is reversed in proportion,
and `billing reconcile` finds the ledger, the meters, the invoice and the transfers agreeing to
the cent. Webhook replays along the way change nothing.

The other parts of this story have their own tests: a worker killed between a transfer and its
ledger row (payouts/test_worker.py), 1,000 predictions' shares losing no cent (payouts/test_store.py).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import httpx
import pytest

from proxy.billing.payouts.outbox import TransferOutbox
from proxy.billing.payouts.store import PayoutLedger
from proxy.billing.store import UsageStore
from proxy.cli import main
from proxy.storage import open_database
from tests.support.billing import KEY, welcome_path
from tests.support.billing import wait_until as eventually
from tests.support.databases import new_database
from tests.support.payday import Payroll, open_payroll
from tests.support.payouts import CATS, DIGITS, charge_of, invoice_period, stripe_transfers

# The calls the proxy makes on its own (meter events, transfers and reversals, and what it reads
# to pay authors): each fails now and then, as Stripe's do.
PATHS = (
    "/v1/billing/meter_events",
    "/v2/billing/meter_event",
    "/v1/transfers",
    "/v1/invoices",
    "/v1/invoice_payments",
    "/v1/payment_intents",
    "/v1/charges",
    "/v1/prices",
    "/v1/accounts",
)
FAULTS = {
    "error": 0.15,
    "rate_limit": 0.1,
    "lose_response": 0.1,
    "timeout": 0.03,
    "hang_s": 2.5,
    "paths": PATHS,
}
CALM = {"error": 0.0, "rate_limit": 0.0, "lose_response": 0.0, "timeout": 0.0}


@pytest.fixture(params=["sqlite", "postgresql"])
def payroll(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Payroll]:
    """The whole flow on each ledger backend in turn: the embedded SQLite, and PostgreSQL."""
    url = new_database(request.getfixturevalue("postgres")) if request.param == "postgresql" else None
    with open_payroll(tmp_path, url) as opened:
        for name, value in opened.environ.items():
            monkeypatch.setenv(name, value)
        yield opened


def owner(payroll: Payroll, *command: str) -> int:
    return main([*command, "--config-dir", str(payroll.config_dir)])


def onboard(payroll: Payroll, handle: str) -> None:
    account = PayoutLedger(open_database(payroll.ledger_url)).author(handle)
    assert account is not None and account.account_id is not None
    httpx.post(f"{payroll.stripe_url}/_test/accounts/{account.account_id}/onboard")
    payroll.delivered(payroll.event("account.updated", account.account_id))


def net_transfers(payroll: Payroll) -> dict[str, int]:
    return {
        t["metadata"]["modelfolio_author"]: t["amount"] - t["amount_reversed"]
        for t in stripe_transfers(payroll.stripe)
    }


def buy_a_key(payroll: Payroll) -> tuple[str, str, str]:
    """'Get an API key' on the digits page, paid at the test Stripe: (key, customer, subscription)."""
    started = payroll.proxy.post("/billing/checkout", data={"model": DIGITS})
    assert started.status_code == 303, started.text
    session_id = started.headers["location"].rsplit("/", 1)[-1]
    session = httpx.post(f"{payroll.stripe_url}/_test/checkout/sessions/{session_id}/complete").json()[
        "session"
    ]
    payroll.delivered(payroll.event("checkout.session.completed", session_id))
    payroll.delivered(payroll.event("customer.subscription.created", session["subscription"]))
    welcome = payroll.proxy.get(welcome_path(session_id))
    (key,) = KEY.findall(welcome.text)
    return key, session["customer"], session["subscription"]


def test_checkout_to_reconcile_the_money_agrees_to_the_cent_through_faults_and_replays(
    payroll: Payroll, capsys: pytest.CaptureFixture[str]
) -> None:
    database = open_database(payroll.ledger_url)
    for handle in ("ada", "bob"):  # ada wrote digits (half is hers), bob cats (30 %)
        assert owner(payroll, "authors", "add", handle, "--email", f"{handle}@example.com") == 0
        onboard(payroll, handle)

    key, _customer, subscription = buy_a_key(payroll)
    bearer = {"Authorization": f"Bearer {key}"}
    capped = payroll.proxy.put("/v1/usage/cap", json={"scope": "key", "monthly": "1.00"}, headers=bearer)
    assert capped.status_code == 200, capped.text

    start = datetime.datetime.now(datetime.UTC).replace(second=0, microsecond=0)
    payroll.stripe.faults.set(seed=5, **FAULTS)  # Stripe misbehaves from the first meter event on
    billed = [payroll.predict(model, key)["billing"]["amount"] for model in (DIGITS, CATS) * 4]
    stopped = payroll.proxy.post(
        f"/v1/models/{DIGITS}/predictions",
        json={"input": {"image": "data:image/png;base64,iVBORw0KGgo="}},
        headers={**bearer, "Prefer": "wait"},
    )
    assert billed == ["0.125"] * 8  # 2.5 s at $0.05 a second, on each model: $1.00 in all
    assert stopped.status_code == 402  # the cap: spent $1.00 of $1.00 this month
    assert (
        "1.00" in stopped.json()["detail"]
        and datetime.date.today().strftime("%Y-%m") in stopped.json()["detail"]
    )
    usage = payroll.proxy.get("/v1/usage", headers=bearer).json()
    assert usage["amount"] == "1.00" and usage["spend_caps"][0]["remaining"] == "0.00"
    eventually(lambda: UsageStore(database).outbox_stats().backlog == 0, "the meter events to reach Stripe")

    invoice = invoice_period(payroll.stripe_url, subscription, start, start + datetime.timedelta(minutes=10))
    paid = payroll.event("invoice.paid", invoice["invoice"]["id"])
    payroll.delivered(paid)
    eventually(lambda: net_transfers(payroll) == {"ada": 25, "bob": 15}, "one transfer to each author")
    for _ in range(2):  # Stripe sends it again: nothing changes
        httpx.post(f"{payroll.stripe_url}/_test/events/{paid}/resend")

    payroll.stripe.faults.set(**CALM)  # the test's own calls to Stripe, as a person would make them
    charge = charge_of(payroll.sdk, invoice["invoice"]["id"])
    assert charge.amount == 100  # the invoice charged what the ledger billed
    payroll.sdk.v1.refunds.create({"charge": charge.id, "amount": 50})
    payroll.stripe.faults.set(seed=9, **FAULTS)
    refunded = payroll.event("charge.refunded", charge.id)
    payroll.delivered(refunded)
    half = {author: int((Decimal(cents) / 2).quantize(Decimal(1), ROUND_HALF_UP)) for author, cents in
            {"ada": 25, "bob": 15}.items()}  # fmt: skip
    eventually(
        lambda: (
            net_transfers(payroll)
            == {author: cents - half[author] for author, cents in {"ada": 25, "bob": 15}.items()}
        ),
        "half of each share reversed",
    )
    httpx.post(f"{payroll.stripe_url}/_test/events/{refunded}/resend")

    payroll.stripe.faults.set(**CALM)
    assert sum(payroll.stripe.calls.get(kind, 0) for kind in ("error", "rate_limit", "lose_response")) > 5
    outbox = TransferOutbox(database)
    eventually(lambda: outbox.stats().transfers_waiting + outbox.stats().reversals_waiting == 0, "the outbox")
    capsys.readouterr()
    assert owner(payroll, "billing", "reconcile") == 0
    report = capsys.readouterr().out
    assert "0 difference(s)" in report
    assert re.search(
        r"2 author payouts compared: ledger (\d+) cents, Stripe \1 cents net of reversals", report
    )
    assert [len(t["reversals"]["data"]) for t in stripe_transfers(payroll.stripe)] == [1, 1]  # nothing twice
    database.close()

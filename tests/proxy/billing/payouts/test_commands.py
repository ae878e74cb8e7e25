"""`python -m proxy authors ...` and the transfers in `billing reconcile`: an author's Express
account is made once however often the owner asks, a link is printed and never logged, bad input
gets a clear error, and reconcile exits non-zero on any difference between payouts and transfers."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.billing.payouts.store import PayoutLedger
from proxy.cli import main
from proxy.storage import open_database
from tests.support.payday import Payroll, open_payroll
from tests.support.payouts import express_author


@pytest.fixture
def payroll(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Payroll]:
    with open_payroll(tmp_path) as opened:
        for name, value in opened.environ.items():
            monkeypatch.setenv(name, value)
        yield opened


def owner(payroll: Payroll, *command: str) -> int:
    return main([*command, "--config-dir", str(payroll.config_dir)])


def test_adding_an_author_twice_makes_one_express_account(
    payroll: Payroll, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="modelfolio.proxy")
    assert owner(payroll, "authors", "add", "ada", "--email", "ada@example.com") == 0
    assert owner(payroll, "authors", "add", "ada", "--email", "ada@example.com") == 0
    assert owner(payroll, "authors", "onboard", "ada") == 0
    out = capsys.readouterr().out

    accounts = payroll.stripe.of("account")
    assert len(accounts) == 1 and accounts[0]["type"] == "express"
    assert accounts[0]["capabilities"] == {"transfers": "inactive"}
    assert out.count(f"Stripe Express account {accounts[0]['id']}") == 2
    link = next(line for line in out.splitlines() if "/setup/e/" in line)
    ours = [record.getMessage() for record in caplog.records if record.name == "modelfolio.proxy"]
    assert not any(link in line for line in ours)  # a bearer URL: printed for the owner, never logged


def test_an_account_made_by_a_run_that_died_before_recording_it_is_found_not_doubled(
    payroll: Payroll,
) -> None:
    made = payroll.sdk.v1.accounts.create(
        {"type": "express", "email": "ada@example.com", "metadata": {"modelfolio_author": "ada"}}
    )

    assert owner(payroll, "authors", "add", "ada", "--email", "ada@example.com") == 0

    database = open_database(payroll.ledger_url)
    assert PayoutLedger(database).author("ada").account_id == made.id  # type: ignore[union-attr]
    database.close()
    assert len(payroll.stripe.of("account")) == 1


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (("authors", "add", "Ada Lovelace", "--email", "ada@example.com"), "author handle like 'ada'"),
        (("authors", "add", "ada", "--email", "not-an-address"), "--email must be an address"),
        (
            ("authors", "add", "ada", "--email", "ada@example.com", "--country", "usa"),
            "--country must be two",
        ),
        (("authors", "onboard", "nobody"), "no author 'nobody' with a Stripe account"),
        (("authors", "onboard", "ada", "--return-url", "ftp://x"), "--return-url must be an http(s) URL"),
    ],
)
def test_bad_input_gets_a_clear_error_and_changes_nothing(
    payroll: Payroll, capsys: pytest.CaptureFixture[str], command: tuple[str, ...], message: str
) -> None:
    if command[1] == "onboard" and command[2] == "ada":
        assert owner(payroll, "authors", "add", "ada", "--email", "ada@example.com") == 0
    before = len(payroll.stripe.of("account"))

    assert owner(payroll, *command) in (1, 2)

    assert message in capsys.readouterr().err
    assert len(payroll.stripe.of("account")) == before and payroll.stripe.links == {}


def test_without_a_stripe_key_the_commands_say_which_secret_is_missing(
    payroll: Payroll, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("STRIPE_SECRET_KEY")
    assert owner(payroll, "authors", "add", "ada", "--email", "ada@example.com") == 2
    assert "STRIPE_SECRET_KEY is not set" in capsys.readouterr().err
    assert owner(payroll, "authors", "list") == 0  # the ledger alone answers this one


def test_reconcile_names_a_transfer_the_ledger_does_not_know_and_exits_non_zero(
    payroll: Payroll, capsys: pytest.CaptureFixture[str]
) -> None:
    account = express_author(payroll.sdk, payroll.stripe_url)
    payroll.stripe.objects["ch_manual"] = {  # a charge from some other sale on the platform
        "id": "ch_manual",
        "object": "charge",
        "amount": 5000,
        "amount_refunded": 0,
        "currency": "usd",
        "status": "succeeded",
    }
    payroll.sdk.v1.transfers.create(
        {
            "amount": 123,
            "currency": "usd",
            "destination": account,
            "source_transaction": "ch_manual",
            "transfer_group": "in_elsewhere",
            "metadata": {"modelfolio_author": "ada"},
        }
    )

    assert owner(payroll, "billing", "reconcile") == 1
    out = capsys.readouterr().out
    assert "DIFFERENCE transfer in_elsewhere ada: ledger 0 cents, Stripe 123 cents" in out
    assert "(not marked sent in the ledger)" in out

"""Spend caps, as a customer and an owner meet them: a key stops at its monthly cap with a 402
naming the cap, the month and what is left; /v1/usage shows it; the totals behind it add up
exactly on both databases however many writers bill at once; bad input gets a clear answer."""

from __future__ import annotations

import datetime
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from proxy.billing.caps import CapStore, period_of
from proxy.billing.store import Usage, UsageStore
from proxy.cli import main
from proxy.storage import Database
from tests.support.proxy import FakeInference, bearer, issue_key, predict, proxy_in_front_of

NOW = datetime.datetime.now(datetime.UTC)
PERIOD = period_of(NOW)


def bill(store: UsageStore, prediction_id: str, amount: str, key_id: str | None = "k1") -> None:
    at = NOW.isoformat(timespec="microseconds")
    usage = Usage(
        prediction_id, "customer:cus_A", "cus_A", "o/digits", "v1", 13, "0.0005", amount, at, key_id=key_id
    )
    store.record_usage(usage, "o_digits_predict_ms")


def test_bills_written_at_once_add_up_exactly_in_the_caps_totals(any_database: Database) -> None:
    store, caps = UsageStore(any_database), CapStore(any_database)
    caps.set("key", "k1", "owner", Decimal("1.00"), NOW.isoformat())
    caps.set("customer", "cus_A", "customer", Decimal("2.00"), NOW.isoformat())
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: bill(store, f"p{i}", "0.0000065"), range(40)))
    found = {cap.scope: cap for cap in caps.caps_of("cus_A", "k1", PERIOD)}
    assert found["key"].spent == found["customer"].spent == Decimal("0.00026")  # 40 x 0.0000065, no loss
    assert found["key"].view(PERIOD) == {
        "scope": "key",
        "set_by": "owner",
        "monthly": "1.00",
        "period": PERIOD,
        "spent": "0.00",
        "remaining": "1.00",
    }


def test_a_months_bills_from_before_the_totals_count_too(any_database: Database) -> None:
    store, caps = UsageStore(any_database), CapStore(any_database)
    bill(store, "p_old", "0.5")
    with any_database.transaction() as cur:  # as a ledger upgraded mid-month has them: no totals yet
        cur.execute("DELETE FROM spend_totals")
    caps.set("customer", "cus_A", "owner", Decimal("1"), NOW.isoformat())
    assert caps.caps_of("cus_A", None, PERIOD)[0].spent == Decimal("0.5")
    bill(store, "p_new", "0.25")
    assert caps.caps_of("cus_A", None, PERIOD)[0].spent == Decimal("0.75")


def cap(client: httpx.Client, key: str, body: object) -> httpx.Response:
    return client.put("/v1/usage/cap", json=body, headers=bearer(key))


def test_a_capped_key_stops_at_its_cap_with_a_402_naming_it(tmp_path: Path) -> None:
    fake = FakeInference(predict_time=8.0)  # 8000 ms at $0.0005/s: $0.004 a prediction
    key = issue_key(tmp_path, "cus_Alice")
    with proxy_in_front_of(fake.app(), tmp_path) as client:
        set_cap = cap(client, key, {"scope": "key", "monthly": "0.01"})
        answers = [predict(client, bearer(key)) for _ in range(4)]
        usage = client.get("/v1/usage", headers=bearer(key)).json()
    assert set_cap.status_code == 200 and set_cap.json()["spend_caps"][0]["monthly"] == "0.01"
    assert [a.status_code for a in answers] == [201, 201, 201, 402]  # admitted while under the cap
    detail = answers[3].json()["detail"]
    assert "$0.01 on this API key" in detail and PERIOD in detail and "$0.00 left" in detail
    assert usage["spend_caps"] == [
        {
            "scope": "key",
            "set_by": "customer",
            "monthly": "0.01",
            "period": PERIOD,
            "spent": "0.01",
            "remaining": "0.00",
        }
    ]  # $0.012 spent, shown to the cent: the third prediction was admitted at $0.008


def test_proxies_sharing_a_ledger_overshoot_a_cap_by_at_most_the_predictions_in_flight(
    tmp_path: Path,
) -> None:
    fake = FakeInference(predict_time=8.0)  # $0.004 each
    key = issue_key(tmp_path, "cus_Bob")
    with proxy_in_front_of(fake.app(), tmp_path) as one, proxy_in_front_of(fake.app(), tmp_path) as two:
        assert cap(one, key, {"scope": "customer", "monthly": "0.05"}).status_code == 200
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: predict((one, two)[i % 2], bearer(key)), range(40)))
        spent = Decimal(one.get("/v1/usage", headers=bearer(key)).json()["amount_exact"])
    admitted = sum(a.status_code == 201 for a in answers)
    assert {a.status_code for a in answers} == {201, 402}
    assert Decimal("0.05") <= spent == admitted * Decimal("0.004") < Decimal("0.05") + 8 * Decimal("0.004")


def owner_config(tmp_path: Path) -> Path:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "wrangler.toml").write_text(
        '[vars]\nOWNER = "modelfolio"\nUPSTREAM_URL = "http://127.0.0.1:9"\n'
        f'PUBLIC_ORIGIN = "http://127.0.0.1:8000"\nLEDGER_PATH = "{tmp_path / "ledger.sqlite3"}"\n'
    )
    return folder


def test_the_owners_cap_holds_whatever_the_customer_sets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = owner_config(tmp_path)
    key = issue_key(tmp_path, "cus_Carol")
    set_cap = ["caps", "set", "--customer", "cus_Carol", "--monthly", "0.01", "--config-dir", str(folder)]
    assert main(set_cap) == 0
    with proxy_in_front_of(FakeInference(predict_time=8.0).app(), tmp_path) as client:
        assert cap(client, key, {"scope": "customer", "monthly": "100.00"}).status_code == 200
        assert cap(client, key, {"scope": "customer", "monthly": None}).status_code == 200  # its own only
        answers = [predict(client, bearer(key)) for _ in range(4)]
    assert [a.status_code for a in answers] == [201, 201, 201, 402]
    assert "set by the owner of this portfolio" in answers[3].json()["detail"]
    capsys.readouterr()
    assert main(["caps", "list", "--config-dir", str(folder)]) == 0
    (line,) = [row for row in capsys.readouterr().out.splitlines() if "cus_Carol" in row]
    assert line.split() == ["customer", "cus_Carol", "owner", "0.01", "0.01", "0.00"]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ("not json", 400, "not valid JSON"),
        ([1], 400, "a JSON object"),
        ({"monthly": "abc"}, 400, "amount in USD"),
        ({"monthly": "-5"}, 400, "above 0"),
        ({"monthly": "1.001"}, 400, "whole cents"),
        ({"monthly": 5.5}, 400, "as a string"),
        ({"scope": "team", "monthly": "5"}, 400, '"scope" must be'),
        ({"scope": "key"}, 400, '"monthly" is required'),
        ({"monthly": "5", "currency": "eur"}, 400, "unknown field(s) currency"),
    ],
)
def test_a_bad_cap_gets_a_clear_error(tmp_path: Path, body: object, status: int, words: str) -> None:
    key = issue_key(tmp_path, "cus_Dave")
    with proxy_in_front_of(FakeInference().app(), tmp_path) as client:
        if isinstance(body, str):
            answer = client.put(
                "/v1/usage/cap", content=body, headers={**bearer(key), "content-type": "application/json"}
            )
        else:
            answer = cap(client, key, body)
        anonymous = client.put("/v1/usage/cap", json={"monthly": "5"})
        wrong_type = client.put("/v1/usage/cap", content=b"monthly=5", headers=bearer(key))
    assert answer.status_code == status and words in answer.json()["detail"]
    assert anonymous.status_code == 401 and wrong_type.status_code == 415


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["set", "--customer", "bob", "--monthly", "5"], "not a Stripe customer id"),
        (["set", "--key", "k1", "--monthly", "five"], "amount in USD"),
        (["clear", "--key", "k1"], "no cap on key k1"),
    ],
)
def test_a_bad_caps_command_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    assert main(["caps", *args, "--config-dir", str(owner_config(tmp_path))]) == 1
    assert words in capsys.readouterr().err

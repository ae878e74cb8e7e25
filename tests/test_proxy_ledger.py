"""The ledger: who created what, what was billed (once), the outbox, the keys."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from proxy.ledger import Ledger, Usage

AT = "2025-06-01T12:00:00.000000+00:00"


@pytest.fixture
def ledger(tmp_path: Path):
    ledger = Ledger(tmp_path / "nested" / "ledger.sqlite3")
    yield ledger
    ledger.close()


def usage(prediction_id: str = "p1", customer: str | None = "cus_A", amount: str = "0.000625") -> Usage:
    caller = f"customer:{customer}" if customer else "address:abc"
    return Usage(prediction_id, caller, customer, "o/digits", "v1", 1250, "0.0005", amount, AT)


def test_the_ledger_is_one_sqlite_file_in_wal_mode(ledger: Ledger) -> None:
    assert ledger.path.is_file()
    mode = ledger._conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    assert ledger.ping()


def test_a_prediction_is_billed_once_with_one_meter_event(ledger: Ledger) -> None:
    first, wrote = ledger.record_usage(usage(), "o_digits_predict_ms")
    again, wrote_again = ledger.record_usage(usage(amount="999"), "o_digits_predict_ms")
    assert (wrote, wrote_again) == (True, False)
    assert first == again == usage()  # the stored row wins, whatever the second call said
    events = ledger.undelivered_meter_events()
    assert [(e.prediction_id, e.customer, e.event_name, e.value_ms) for e in events] == [
        ("p1", "cus_A", "o_digits_predict_ms", 1250)
    ]


def test_concurrent_writers_bill_once(ledger: Ledger) -> None:
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: ledger.record_usage(usage(), "e")[1], range(10)))
    assert results.count(True) == 1
    assert len(ledger.usage_of("customer:cus_A")) == 1


def test_a_second_process_sharing_the_file_sees_the_same_bill(ledger: Ledger) -> None:
    other = Ledger(ledger.path)
    try:
        ledger.record_usage(usage(), "e")
        assert other.record_usage(usage(), "e")[1] is False
        assert other.usage_for("p1") == usage()
    finally:
        other.close()


def test_the_demo_is_billed_as_the_owners_cost_and_never_queued_for_stripe(ledger: Ledger) -> None:
    stored, wrote = ledger.record_usage(usage(customer=None), "e")
    assert wrote and stored.stripe_customer is None
    assert ledger.undelivered_meter_events() == []


def test_a_delivered_meter_event_leaves_the_queue(ledger: Ledger) -> None:
    ledger.record_usage(usage("p1"), "e")
    ledger.record_usage(usage("p2"), "e")
    ledger.mark_meter_event_delivered("p1", AT)
    assert [e.prediction_id for e in ledger.undelivered_meter_events()] == ["p2"]


def test_predictions_are_counted_per_caller_since_a_time(ledger: Ledger) -> None:
    ledger.record_prediction("a", "address:x", "o/digits", "2025-05-31T23:59:59.999999+00:00")
    ledger.record_prediction("b", "address:x", "o/digits", "2025-06-01T00:00:00.000000+00:00")
    ledger.record_prediction("c", "address:y", "o/digits", "2025-06-01T10:00:00.000000+00:00")
    ledger.record_prediction("b", "address:y", "o/digits", AT)  # a repeat changes nothing
    assert ledger.count_predictions_since("address:x", "2025-06-01T00:00:00.000000+00:00") == 1
    assert ledger.creator_of("b") == "address:x"
    assert ledger.creator_of("zzz") is None


def test_api_keys_are_stored_and_revoked(ledger: Ledger) -> None:
    ledger.add_api_key("k1", "hash1", "cus_A", AT)
    assert ledger.api_key("k1").customer == "cus_A"
    assert ledger.revoke_api_key("k1", AT) is True
    assert ledger.revoke_api_key("k1", AT) is False
    assert ledger.api_key("k1").revoked_at == AT
    assert ledger.api_key("nope") is None

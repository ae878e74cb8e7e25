"""The edge's records, on SQLite and on PostgreSQL alike: who created which prediction and
uploaded which file, and the API keys."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from proxy.ledger import Ledger
from proxy.storage import Database

AT = "2025-06-01T12:00:00.000000+00:00"


def test_predictions_are_counted_per_caller_since_a_time(any_database: Database) -> None:
    ledger = Ledger(any_database)
    ledger.record_prediction("a", "address:x", "o/digits", "2025-05-31T23:59:59.999999+00:00")
    ledger.record_prediction("b", "address:x", "o/digits", "2025-06-01T00:00:00.000000+00:00")
    ledger.record_prediction("c", "address:y", "o/digits", "2025-06-01T10:00:00.000000+00:00")
    ledger.record_prediction("b", "address:y", "o/digits", AT)  # a repeat changes nothing
    assert ledger.count_predictions_since("address:x", "2025-06-01T00:00:00.000000+00:00") == 1
    assert ledger.creator_of("b") == "address:x"
    assert ledger.creator_of("zzz") is None


def test_a_prediction_recorded_before_its_model_was_known_learns_it_but_never_a_new_owner(
    any_database: Database,
) -> None:
    ledger = Ledger(any_database)
    ledger.record_prediction("p", "customer:cus_A", "", AT)  # an idempotent create, before the answer
    ledger.record_prediction("p", "customer:cus_A", "o/digits", AT)
    ledger.record_prediction("p", "customer:cus_B", "o/other", AT)
    with any_database.transaction() as cur:
        cur.execute("SELECT caller, model FROM predictions WHERE id = ?", ("p",))
        assert tuple(cur.fetchone()) == ("customer:cus_A", "o/digits")


def test_many_threads_recording_one_prediction_leave_one_owner(any_database: Database) -> None:
    ledger = Ledger(any_database)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: ledger.record_prediction("p", f"address:{i}", "o/digits", AT), range(8)))
    assert ledger.count_predictions_since(ledger.creator_of("p") or "", "") == 1


def test_uploads_belong_to_their_uploader_and_keep_their_hash(any_database: Database) -> None:
    ledger = Ledger(any_database)
    ledger.record_upload("f1", "customer:cus_A", AT, "ab" * 32)
    assert ledger.uploader_of("f1") == "customer:cus_A"
    assert ledger.upload_hash("f1") == "ab" * 32
    assert ledger.uploader_of("f2") is None


def test_api_keys_are_stored_and_revoked(any_database: Database) -> None:
    ledger = Ledger(any_database)
    ledger.add_api_key("k1", "hash1", "cus_A", AT)
    record = ledger.api_key("k1")
    assert record is not None and record.customer == "cus_A"
    assert ledger.revoke_api_key("k1", AT) is True
    assert ledger.revoke_api_key("k1", AT) is False
    revoked = ledger.api_key("k1")
    assert revoked is not None and revoked.revoked_at == AT
    assert ledger.api_key("nope") is None


def test_a_callers_predictions_page_newest_first_both_ways_with_their_last_record(
    any_database: Database,
) -> None:
    ledger = Ledger(any_database)
    for i in range(5):
        ledger.record_prediction(f"p{i}", "customer:cus_A", "o/digits", f"2025-06-01T12:00:0{i}.000000+00:00")
    ledger.record_prediction("theirs", "customer:cus_B", "o/digits", AT)
    ledger.remember_prediction("p4", '{"status": "starting"}', False, AT)
    ledger.remember_prediction("p4", '{"status": "succeeded"}', True, AT)
    ledger.remember_prediction("p4", '{"status": "processing"}', False, AT)  # a stale answer, later
    first = ledger.predictions_page("customer:cus_A", None, 2)
    assert [row[0] for row in first.rows] == ["p4", "p3"] and (first.has_older, first.has_newer) == (
        True,
        False,
    )
    assert first.rows[0][3] == '{"status": "succeeded"}' and first.rows[1][3] is None
    middle = ledger.predictions_page("customer:cus_A", (first.rows[-1][2], "p3"), 2)
    assert [row[0] for row in middle.rows] == ["p2", "p1"] and (middle.has_older, middle.has_newer) == (
        True,
        True,
    )
    back = ledger.predictions_page("customer:cus_A", (middle.rows[0][2], "p2"), 2, newer=True)
    assert [row[0] for row in back.rows] == ["p4", "p3"] and (back.has_older, back.has_newer) == (True, False)
    assert ledger.run_counts() == {"o/digits": 6}


def test_a_callers_uploads_are_listed_until_they_expire(any_database: Database) -> None:
    ledger = Ledger(any_database)
    ledger.record_upload("f1", "customer:cus_A", "2025-06-01T12:00:01.000000+00:00")
    ledger.record_upload("f2", "customer:cus_A", "2025-06-01T12:00:02.000000+00:00")
    ledger.remember_upload("f1", '{"id": "f1"}', "2025-06-01T13:00:01.000000Z")
    ledger.remember_upload("f2", '{"id": "f2"}', "2025-06-01T14:00:00.000000Z")
    at_half_past = ledger.uploads_page("customer:cus_A", "2025-06-01T12:30:00.000000Z", None, 10)
    assert [row[0] for row in at_half_past.rows] == ["f2", "f1"]
    later = ledger.uploads_page("customer:cus_A", "2025-06-01T13:30:00.000000Z", None, 10)
    assert [row[0] for row in later.rows] == ["f2"]
    ledger.forget_upload("f2")
    assert ledger.uploads_page("customer:cus_A", "2025-06-01T12:30:00.000000Z", None, 10).rows == [
        ("f1", "2025-06-01T12:00:01.000000+00:00", '{"id": "f1"}')
    ]

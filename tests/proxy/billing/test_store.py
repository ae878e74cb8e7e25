"""The bill and the meter outbox, on SQLite and on PostgreSQL alike: a prediction billed once,
whatever the number of writers; an outbox that several workers drain by leasing whole lanes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from proxy.billing.store import Usage, UsageStore
from proxy.storage import Database

AT = "2025-06-01T12:00:00.000000+00:00"
LATER = "2025-06-01T12:01:00.000000+00:00"
MUCH_LATER = "2025-06-01T13:00:00.000000+00:00"


def usage(
    prediction_id: str = "p1", customer: str | None = "cus_A", amount: str = "0.000625", ms: int = 1250
) -> Usage:
    caller = f"customer:{customer}" if customer else "address:abc"
    return Usage(prediction_id, caller, customer, "o/digits", "v1", ms, "0.0005", amount, AT)


def test_a_prediction_is_billed_once_with_one_meter_event(any_database: Database) -> None:
    store = UsageStore(any_database)
    first, wrote = store.record_usage(usage(), "o_digits_predict_ms")
    again, wrote_again = store.record_usage(usage(amount="999"), "o_digits_predict_ms")
    assert (wrote, wrote_again) == (True, False)
    assert first == again == usage()  # the stored row wins, whatever the second call said
    events = store.undelivered_meter_events()
    assert [(e.prediction_id, e.customer, e.event_name, e.value_ms) for e in events] == [
        ("p1", "cus_A", "o_digits_predict_ms", 1250)
    ]


def test_concurrent_writers_bill_once(any_database: Database) -> None:
    store = UsageStore(any_database)
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: store.record_usage(usage(), "e")[1], range(10)))
    assert results.count(True) == 1
    assert len(store.usage_of("customer:cus_A")) == 1
    assert len(store.undelivered_meter_events()) == 1


def test_the_demo_is_billed_as_the_owners_cost_and_never_queued_for_stripe(any_database: Database) -> None:
    store = UsageStore(any_database)
    stored, wrote = store.record_usage(usage(customer=None), "e")
    assert wrote and stored.stripe_customer is None
    assert store.undelivered_meter_events() == []


def test_a_delivered_meter_event_leaves_the_queue_and_counts_in_the_totals(any_database: Database) -> None:
    store = UsageStore(any_database)
    store.record_usage(usage("p1"), "e")
    store.record_usage(usage("p2", ms=5), "e")
    store.mark_delivered(["p1"], LATER)
    assert [e.prediction_id for e in store.undelivered_meter_events()] == ["p2"]
    assert store.delivered_meter_totals("0", "9") == {("cus_A", "e"): 1250}
    assert store.outbox_stats().backlog == 1


def test_a_dead_event_waits_for_an_operator_and_is_never_sent_again(any_database: Database) -> None:
    store = UsageStore(any_database)
    store.record_usage(usage("p1"), "e")
    store.record_usage(usage("p2"), "e")
    store.dead_letter("p1", "Stripe refused it", LATER)
    assert store.dead_meter_events() == [("p1", "Stripe refused it")]
    assert [e.prediction_id for e in store.undelivered_meter_events()] == ["p2"]
    stats = store.outbox_stats()
    assert (stats.backlog, stats.dead) == (1, 1)


def test_delivered_wins_over_a_dead_mark_from_a_worker_whose_lease_had_run_out(
    any_database: Database,
) -> None:
    store = UsageStore(any_database)
    store.record_usage(usage("p1"), "e")
    store.dead_letter("p1", "timed out", LATER)  # the old holder gave up on it...
    store.mark_delivered(["p1"], LATER)  # ...while the new holder's call reached Stripe
    store.dead_letter("p1", "late", MUCH_LATER)  # and nothing marks a delivered event dead
    assert store.dead_meter_events() == []
    assert store.delivered_meter_totals("0", "9") == {("cus_A", "e"): 1250}


def test_a_lane_is_leased_to_one_worker_until_its_lease_runs_out(any_database: Database) -> None:
    store = UsageStore(any_database)
    store.record_usage(usage("p1", customer="cus_A"), "e")
    store.record_usage(usage("p2", customer="cus_B"), "e")
    first = store.claim_lanes("worker-1", AT, LATER, limit=1)
    second = store.claim_lanes("worker-2", AT, LATER, limit=10)
    assert first == [("cus_A", "e")] and second == [("cus_B", "e")]  # never the same lane twice
    assert store.claim_lanes("worker-3", AT, LATER, limit=10) == []
    # worker-1 dies: once its lease has run out, its lane is free for another.
    assert store.claim_lanes("worker-3", MUCH_LATER, "2025-06-01T13:01:00.000000+00:00", limit=10) == [
        ("cus_A", "e"),
        ("cus_B", "e"),
    ]


def test_a_renewed_lease_is_kept_and_a_released_lane_is_free_at_once(any_database: Database) -> None:
    store = UsageStore(any_database)
    store.record_usage(usage("p1"), "e")
    assert store.claim_lanes("worker-1", AT, LATER, limit=10) == [("cus_A", "e")]
    assert store.renew("worker-1", MUCH_LATER) == 1
    assert store.claim_lanes("worker-2", "2025-06-01T12:30:00.000000+00:00", MUCH_LATER, limit=10) == []
    store.release("worker-1", ("cus_A", "e"))
    assert store.claim_lanes("worker-2", AT, LATER, limit=10) == [("cus_A", "e")]


def test_lanes_with_nothing_pending_are_not_leased(any_database: Database) -> None:
    store = UsageStore(any_database)
    store.record_usage(usage("p1"), "e")
    store.mark_delivered(["p1"], LATER)
    assert store.claim_lanes("worker-1", AT, LATER, limit=10) == []


def test_many_workers_claiming_at_once_never_share_a_lane(any_database: Database) -> None:
    store = UsageStore(any_database)
    for i in range(40):
        store.record_usage(usage(f"p{i}", customer=f"cus_{i}"), "e")
    with ThreadPoolExecutor(8) as pool:
        claims = list(pool.map(lambda w: store.claim_lanes(f"worker-{w}", AT, LATER, limit=10), range(8)))
    leased = [lane for claim in claims for lane in claim]
    assert len(leased) == len(set(leased)) == 40


def test_a_dead_letter_is_requeued_once_under_a_new_identifier(any_database: Database) -> None:
    store = UsageStore(any_database)
    store.record_usage(usage("p1"), "e")
    assert store.mark_attempted(["p1"], AT) == {"p1": AT}
    assert store.mark_attempted(["p1"], LATER) == {"p1": AT}  # the first attempt stays
    store.dead_letter("p1", "not confirmed", LATER)
    (letter,) = store.dead_letters()
    assert store.requeue(letter.event) and not store.requeue(letter.event)  # a second operator: no
    (event,) = store.undelivered_meter_events()
    assert (event.identifier, event.first_attempt_at, event.resends) == ("p1.r1", None, 1)


def test_a_dead_letter_stripe_has_is_delivered_and_counts_again(any_database: Database) -> None:
    store = UsageStore(any_database)
    store.record_usage(usage("p1"), "e")
    store.dead_letter("p1", "not confirmed", LATER)
    assert store.delivered_meter_totals("0", "9") == {}
    assert store.found_at_stripe("p1", MUCH_LATER) and store.dead_letters() == []
    assert store.delivered_meter_totals("0", "9") == {("cus_A", "e"): 1250}

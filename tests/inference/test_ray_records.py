"""The prediction directory that Ray Serve replicas share, as plain Python on one event loop (no Ray
processes: the deployment itself, a replica killed included, is tested in test_ray_serve.py). The
object store is stood in for by keeping each value as it is, and time by a clock the test moves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from inference import ray_records
from inference.ray_records import (
    LEASE_S,
    NO_REPLICA,
    ORPHAN_WAIT_S,
    STOPPED_TWICE,
    STOPPED_WHILE_RUNNING,
    PredictionDirectory,
)
from inference.uploads import Upload


def record(prediction_id: str, status: str) -> dict[str, Any]:
    return {"id": prediction_id, "status": status, "output": None, "error": None}


def spec(prediction_id: str) -> dict[str, Any]:
    return {"id": prediction_id, "input": {"image": "data:image/png;base64,iVBORw0KGgo="}}


async def as_is(value: Any) -> Any:
    return value


def make_directory(
    now: list[float] | None = None, *, read: Callable[[Any], Awaitable[Any]] = as_is, **options: Any
) -> PredictionDirectory:
    clock = (lambda: now[0]) if now is not None else (lambda: 0.0)
    return PredictionDirectory(
        ttl_s=3600, max_records=100, clock=clock, keep=as_is, read=read, reap_every_s=None, **options
    )


def run(story: Coroutine[Any, Any, None]) -> None:
    asyncio.run(story)


def test_the_latest_record_is_read_back_and_a_late_update_never_steps_it_back() -> None:
    async def story() -> None:
        directory = PredictionDirectory(ttl_s=60, max_records=10)
        await directory.publish("a", [record("p1", "starting"), record("p1", "processing")])
        await directory.publish("a", [record("p1", "succeeded")])
        await directory.publish("a", [record("p1", "processing")])  # a call that ran out of order
        assert (await directory.get("p1") or {})["status"] == "succeeded"
        assert await directory.get("unknown") is None

    run(story())


def test_records_are_kept_a_while_and_at_most_so_many_as_a_replica_keeps_its_own() -> None:
    now = [0.0]

    async def story() -> None:
        directory = PredictionDirectory(ttl_s=60, max_records=2, clock=lambda: now[0])
        await directory.publish("a", [record("p1", "succeeded"), record("p2", "processing")])
        await directory.publish("b", [record("p3", "processing")])
        assert await directory.get("p1") is None  # the least recently changed went first
        await directory.publish("b", [record("p2", "succeeded")])  # changed again: kept longest
        now[0] = 59.0
        await directory.publish("b", [record("p4", "starting")])
        assert [await directory.get(p) is not None for p in ("p2", "p3", "p4")] == [True, False, True]
        now[0] = 120.0
        assert await directory.get("p4") is None and await directory.get("p2") is None

    run(story())


def test_a_cancel_is_carried_out_by_the_replica_that_owns_the_prediction() -> None:
    async def story() -> None:
        directory = PredictionDirectory(ttl_s=60, max_records=10)
        await directory.publish("owner", [record("p1", "starting")])
        waiting = asyncio.create_task(directory.next_orders("owner"))  # as the owner always is
        cancel = asyncio.create_task(directory.cancel("p1"))  # from another replica
        assert await waiting == [{"cancel": "p1"}]
        await directory.answer("owner", "p1", record("p1", "canceled"))
        assert (await cancel or {})["status"] == "canceled"
        assert (await directory.get("p1") or {})["status"] == "canceled"

    run(story())


def test_a_cancel_of_a_finished_or_unknown_prediction_bothers_no_replica() -> None:
    async def story() -> None:
        directory = PredictionDirectory(ttl_s=60, max_records=10)
        await directory.publish("owner", [record("p1", "succeeded")])
        assert (await directory.cancel("p1") or {})["status"] == "succeeded"
        assert await directory.cancel("unknown") is None
        waiting = asyncio.create_task(directory.next_orders("owner"))
        await directory.leave("owner")
        assert await waiting is None  # nothing was sent to it; leaving ends its wait

    run(story())


def test_a_cancel_whose_replica_never_answers_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_records, "CANCEL_WAIT_S", 0.01)

    async def story() -> None:
        directory = PredictionDirectory(ttl_s=60, max_records=10)
        await directory.publish("crashed", [record("p1", "processing")])
        with pytest.raises(TimeoutError):
            await directory.cancel("p1")
        await directory.answer("crashed", "p1", None)  # a late answer finds no one waiting

    run(story())


async def join(directory: PredictionDirectory, *replicas: str) -> None:
    for replica in replicas:  # each one's models loaded, as its first heartbeats then say
        await directory.join(replica)
        assert await directory.heartbeat(replica, ready=True)


async def orders_for(directory: PredictionDirectory, owner: str) -> list[dict[str, Any]] | None:
    return await asyncio.wait_for(directory.next_orders(owner), 1)


def test_a_replica_that_goes_silent_has_its_queued_predictions_run_elsewhere_and_its_running_one_failed() -> (
    None
):
    now = [0.0]

    async def story() -> None:
        directory = make_directory(now)
        await join(directory, "a", "b")
        await directory.publish(
            "a",
            [record("queued", "starting"), record("running", "starting"), record("running", "processing")],
            {"queued": spec("queued"), "running": spec("running")},
        )
        now[0] = LEASE_S / 2
        assert await directory.heartbeat("b", ready=True)  # b renews its lease; a has died
        now[0] = LEASE_S + 1
        await directory.reap()
        assert await orders_for(directory, "b") == [{"run": "queued", "spec": spec("queued")}]
        running = await directory.get("running") or {}
        assert (running["status"], running["error"]) == ("failed", STOPPED_WHILE_RUNNING)
        assert running["completed_at"]
        assert (await directory.get("queued") or {})["status"] == "starting"  # until b publishes it
        # The replica that took it over runs it under the same id: its records count from now on.
        await directory.publish("b", [record("queued", "starting")], {"queued": spec("queued")})
        await directory.publish("b", [record("queued", "succeeded")])
        assert (await directory.get("queued") or {})["status"] == "succeeded"
        assert await orders_for(directory, "a") is None  # a's wait for orders ends

    run(story())


def test_a_handed_over_prediction_that_cannot_be_read_fails_and_the_other_orders_still_arrive() -> None:
    async def lost(value: Any) -> Any:
        if value["id"] == "p1":
            raise ConnectionError("the object was lost with its node")
        return value

    async def story() -> None:
        directory = make_directory(read=lost)
        await join(directory, "a", "b")
        await directory.publish(
            "a", [record("p1", "starting"), record("p2", "starting")], {"p1": spec("p1"), "p2": spec("p2")}
        )
        await directory.leave("a")
        assert await orders_for(directory, "b") == [{"run": "p2", "spec": spec("p2")}]
        p1 = await directory.get("p1") or {}
        assert p1["status"] == "failed" and "could not be read" in p1["error"], p1

    run(story())


def test_a_prediction_is_handed_over_once_and_fails_when_its_second_replica_stops_too() -> None:
    async def story() -> None:
        directory = make_directory()
        await join(directory, "a", "b")
        await directory.publish("a", [record("p1", "starting")], {"p1": spec("p1")})
        await directory.leave("a")
        assert await orders_for(directory, "b") == [{"run": "p1", "spec": spec("p1")}]
        await directory.publish("b", [record("p1", "starting")], {"p1": spec("p1")})
        await join(directory, "c")
        await directory.leave("b")
        p1 = await directory.get("p1") or {}
        assert (p1["status"], p1["error"]) == ("failed", STOPPED_TWICE)
        waiting = asyncio.create_task(directory.next_orders("c"))
        await directory.leave("c")
        assert await waiting is None  # c was never handed p1

    run(story())


def test_a_handed_over_prediction_waits_for_a_replica_and_fails_if_none_comes() -> None:
    now = [0.0]

    async def story() -> None:
        directory = make_directory(now)
        await join(directory, "only")
        await directory.publish(
            "only",
            [record("p1", "starting"), record("p2", "starting")],
            {
                "p1": spec("p1"),
                "p2": spec("p2"),
            },
        )
        await directory.leave("only")  # the one replica stopped; Serve starts a new one
        await directory.join("new")
        assert await directory.heartbeat("new", ready=False)  # still loading its models
        orders = asyncio.create_task(directory.next_orders("new"))
        await asyncio.sleep(0)
        assert not orders.done()  # nothing is handed to it yet
        assert await directory.heartbeat("new", ready=True)
        assert await orders == [
            {"run": "p1", "spec": spec("p1")},
            {"run": "p2", "spec": spec("p2")},
        ]
        await directory.publish("new", [record("p3", "starting")], {"p3": spec("p3")})
        await directory.leave("new")  # p1 and p2 have had their second replica; p3 waits
        now[0] = ORPHAN_WAIT_S + 1
        await directory.reap()
        statuses = [(await directory.get(p) or {}).get("error") for p in ("p1", "p2", "p3")]
        assert statuses == [STOPPED_TWICE, STOPPED_TWICE, NO_REPLICA]

    run(story())


def test_a_replica_taken_for_gone_is_told_so_and_its_late_news_is_ignored() -> None:
    now = [0.0]

    async def story() -> None:
        directory = make_directory(now)
        await join(directory, "slow")
        await directory.publish("slow", [record("p1", "processing")])
        now[0] = LEASE_S + 1
        await directory.reap()
        assert await directory.heartbeat("slow", ready=True) is False
        assert await directory.publish("slow", [record("p1", "succeeded")]) is False
        assert (await directory.get("p1") or {})["error"] == STOPPED_WHILE_RUNNING

    run(story())


def test_a_cancel_waiting_on_a_replica_that_dies_ends_canceled() -> None:
    now = [0.0]

    async def story() -> None:
        directory = make_directory(now)
        await join(directory, "a")
        await directory.publish("a", [record("p1", "processing")])
        cancel = asyncio.create_task(directory.cancel("p1"))
        await asyncio.sleep(0)  # the cancel is in a's mailbox, which nobody reads any more
        now[0] = LEASE_S + 1
        await directory.reap()
        assert (await cancel or {})["status"] == "canceled"

    run(story())


def test_an_upload_is_readable_until_it_expires_or_is_deleted_and_so_many_are_held_at_most() -> None:
    now = [0.0]

    def upload(file_id: str) -> Upload:
        return Upload(id=file_id, name=f"{file_id}.png", content_type="image/png", size=3, sha256="0" * 64)

    async def story() -> None:
        directory = make_directory(now, max_files=2)
        assert await directory.add_file(upload("f1"), b"one")
        assert await directory.add_file(upload("f2"), b"two")
        assert not await directory.add_file(upload("f3"), b"three")  # the replica answers 400
        found = await directory.file("f1")
        assert found is not None and found.name == "f1.png"
        assert await directory.file_content("f1") == ("image/png", b"one")
        assert await directory.delete_file("f1") and not await directory.delete_file("f1")
        assert await directory.file("f1") is None and await directory.file_content("f1") is None
        now[0] = 3601
        assert await directory.file("f2") is None and await directory.file_count() == 0

    run(story())

"""The prediction directory that Ray Serve replicas share, as plain Python on one event loop (no Ray
processes: the deployment itself is tested in test_ray_serve.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

pytest.importorskip("ray")  # inference.ray_records imports it

from inference import ray_records
from inference.ray_records import PredictionDirectory


def record(prediction_id: str, status: str) -> dict[str, Any]:
    return {"id": prediction_id, "status": status, "output": None}


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
        await directory.publish("a", [record("p1", "succeeded"), record("p2", "succeeded")])
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
        waiting = asyncio.create_task(directory.next_cancels("owner"))  # as the owner always is
        cancel = asyncio.create_task(directory.cancel("p1"))  # from another replica
        assert await waiting == ["p1"]
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
        waiting = asyncio.create_task(directory.next_cancels("owner"))
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

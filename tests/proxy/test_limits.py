"""Rate limits and the demo quota: in memory for one process, and in Redis as one limit for many."""

from __future__ import annotations

import asyncio
import datetime
import types
from collections.abc import Awaitable
from typing import Any

import limits.aio.storage.memory
import pytest
from redis.asyncio import Redis

from proxy import limits as proxy_limits
from proxy.config import RateLimit
from proxy.errors import DemoQuotaExhausted, StorageUnavailable, TooManyRequests
from proxy.limits import (
    MemoryQuota,
    RateLimiter,
    RedisQuota,
    limits_storage,
    seconds_until_utc_midnight,
    utc_day_start,
)
from tests.support.servers import free_port

NOON = datetime.datetime(2025, 6, 1, 12, tzinfo=datetime.UTC)


class Clock:
    """Wall time for the limits library and ours, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    fake = types.SimpleNamespace(time=clock.time, monotonic=clock.time)
    monkeypatch.setattr(limits.aio.storage.memory, "time", fake)
    monkeypatch.setattr(limits.aio.strategies, "time", fake)
    monkeypatch.setattr(proxy_limits, "time", fake)
    return clock


def run(step: Awaitable[Any]) -> Any:
    return asyncio.run(step)  # type: ignore[arg-type]


def test_a_caller_past_the_limit_waits_until_the_oldest_request_leaves_the_window(clock: Clock) -> None:
    async def scenario() -> None:
        limiter = RateLimiter((RateLimit("predictions", 3, 10),), limits_storage(None))
        for _ in range(3):
            await limiter.hit("alice", creates=True)
            clock.now += 1
        with pytest.raises(TooManyRequests) as refused:
            await limiter.hit("alice", creates=True)
        assert refused.value.retry_after == 7  # the first leaves at 1000 + 10; it is now 1003
        await limiter.hit("bob", creates=True)  # others are not affected
        clock.now = 1010.5
        await limiter.hit("alice", creates=True)

    run(scenario())


def test_a_refused_request_does_not_count(clock: Clock) -> None:
    async def scenario() -> None:
        limiter = RateLimiter((RateLimit("p", 1, 10),), limits_storage(None))
        refused: list[str] = []
        limiter.refused = refused.append
        await limiter.hit("alice", creates=True)
        for _ in range(5):
            with pytest.raises(TooManyRequests):
                await limiter.hit("alice", creates=True)
        clock.now += 10.5
        await limiter.hit("alice", creates=True)
        assert refused == ["p"] * 5

    run(scenario())


def test_prediction_limits_ignore_polls_and_request_limits_count_everything(clock: Clock) -> None:
    async def scenario() -> None:
        rules = (RateLimit("predictions", 1, 60), RateLimit("api", 3, 60, "requests"))
        limiter = RateLimiter(rules, limits_storage(None))
        await limiter.hit("alice", creates=True)
        await limiter.hit("alice", creates=False)
        await limiter.hit("alice", creates=False)
        with pytest.raises(TooManyRequests, match="3 requests every 60 seconds"):
            await limiter.hit("alice", creates=False)

    run(scenario())


def test_proxies_sharing_redis_admit_one_limit_between_them(redis_url: str) -> None:
    async def scenario() -> list[bool]:
        rule = (RateLimit("shared", 10, 60),)
        clients = [Redis.from_url(redis_url) for _ in range(3)]  # three proxy processes
        proxies = [RateLimiter(rule, limits_storage(client)) for client in clients]

        async def attempt(i: int) -> bool:
            try:
                await proxies[i % 3].hit("customer:cus_A", creates=True)
            except TooManyRequests:
                return False
            return True

        admitted = list(await asyncio.gather(*(attempt(i) for i in range(30))))
        for client in clients:
            await client.aclose()
        return admitted

    assert run(scenario()).count(True) == 10


def test_limits_in_a_redis_that_is_gone_answer_503_not_500() -> None:
    async def scenario() -> None:
        gone = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
        limiter = RateLimiter((RateLimit("p", 1, 10),), limits_storage(gone))
        with pytest.raises(StorageUnavailable):
            await limiter.hit("alice", creates=True)
        await gone.aclose()

    run(scenario())


def test_the_demo_quota_in_memory_counts_the_ledger_and_requests_still_in_flight() -> None:
    async def in_ledger(caller: str, since: str) -> int:
        return 1

    async def scenario() -> None:
        quota = MemoryQuota(2, in_ledger)
        await quota.acquire("x", NOON)
        with pytest.raises(DemoQuotaExhausted) as refused:
            await quota.acquire("x", NOON)
        assert refused.value.retry_after == 12 * 3600
        await quota.release("x", NOON, kept=False)
        await quota.acquire("x", NOON)

    run(scenario())


def test_the_demo_quota_in_redis_is_one_quota_for_every_proxy_and_a_failed_create_gives_its_slot_back(
    redis_url: str,
) -> None:
    async def scenario() -> None:
        clients = [Redis.from_url(redis_url) for _ in range(3)]
        quotas = [RedisQuota(5, client) for client in clients]

        async def attempt(i: int) -> bool:
            try:
                await quotas[i % 3].acquire("address:visitor", NOON)
            except DemoQuotaExhausted:
                return False
            return True

        admitted = await asyncio.gather(*(attempt(i) for i in range(20)))
        assert admitted.count(True) == 5
        assert await quotas[0].used("address:visitor", NOON) == 5
        await quotas[1].release("address:visitor", NOON, kept=False)  # that create failed upstream
        await quotas[2].acquire("address:visitor", NOON)
        with pytest.raises(DemoQuotaExhausted):
            await quotas[0].acquire("address:visitor", NOON)
        tomorrow = NOON + datetime.timedelta(days=1)
        await quotas[0].acquire("address:visitor", tomorrow)  # a new UTC day, a new quota
        for client in clients:
            await client.aclose()

    run(scenario())


def test_a_switched_off_demo_says_so() -> None:
    async def none(caller: str, since: str) -> int:
        return 0

    with pytest.raises(DemoQuotaExhausted, match="switched off"):
        run(MemoryQuota(0, none).acquire("x", NOON))


def test_the_utc_day_starts_at_midnight_utc_whatever_the_callers_zone() -> None:
    tokyo = datetime.timezone(datetime.timedelta(hours=9))
    now = datetime.datetime(2025, 6, 2, 8, 0, tzinfo=tokyo)  # 23:00 UTC on June 1
    assert utc_day_start(now) == datetime.datetime(2025, 6, 1, tzinfo=datetime.UTC)
    assert seconds_until_utc_midnight(now) == 3600
    almost = datetime.datetime(2025, 6, 1, 23, 59, 59, 500000, tzinfo=datetime.UTC)
    assert seconds_until_utc_midnight(almost) == 1

"""How much a caller may do: the `[[ratelimits]]` windows and the anonymous demo quota.

One process keeps them in memory; several share them in Redis (`[limits] redis_url`, REDIS_URL),
so N proxies admit what one would, and a restart forgets nothing. The windows are the `limits`
library's moving windows (a Lua script on Redis: atomic across processes). The demo quota is our
own small counter, because a reserved prediction whose create then fails must give its slot back,
and `limits` has no way to return one.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import limits
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from proxy.config import RateLimit
from proxy.errors import DemoQuotaExhausted, StorageUnavailable, TooManyRequests


def limits_storage(redis: Redis | None) -> Storage:
    """Memory, or the proxy's own Redis client's connections (closed with it)."""
    if redis is None:
        return MemoryStorage()
    pool: Any = redis.connection_pool  # limits hands it to redis-py; its own stub types options as scalars
    return RedisStorage(
        "async+redis://", implementation="redispy", wrap_exceptions=True, connection_pool=pool
    )


class RateLimiter:
    """Moving windows per (limit, caller): at most `limit` requests in any `period` seconds."""

    def __init__(self, rules: tuple[RateLimit, ...], storage: Storage) -> None:
        self._rules = [(rule, limits.RateLimitItemPerSecond(rule.limit, rule.period)) for rule in rules]
        self._limiter = MovingWindowRateLimiter(storage)
        self.refused: Callable[[str], None] = lambda name: None  # counts 429s (proxy/metrics.py)

    async def hit(self, caller_id: str, *, creates: bool) -> None:
        """Counts one request, or raises TooManyRequests without counting it (when it is over a
        limit before it is counted; two processes racing for the last slot may both be refused)."""
        rules = [(rule, item) for rule, item in self._rules if creates or rule.applies_to == "requests"]
        try:
            for rule, item in rules:
                if not await self._limiter.test(item, rule.name, caller_id):
                    await self._refuse(rule, item, caller_id)
            for rule, item in rules:
                if not await self._limiter.hit(item, rule.name, caller_id):
                    await self._refuse(rule, item, caller_id)
        except limits.errors.StorageError as error:
            raise StorageUnavailable(f"the rate limits' store cannot be reached: {error}") from None

    async def _refuse(self, rule: RateLimit, item: limits.RateLimitItem, caller_id: str) -> None:
        stats = await self._limiter.get_window_stats(item, rule.name, caller_id)
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        self.refused(rule.name)
        what = "predictions" if rule.applies_to == "predictions" else "requests"
        raise TooManyRequests(
            f"Too many requests: the limit is {rule.limit} {what} every {rule.period} seconds. "
            f"Try again in {wait} seconds.",
            retry_after=wait,
        )


def utc_day_start(now: datetime.datetime) -> datetime.datetime:
    return now.astimezone(datetime.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def seconds_until_utc_midnight(now: datetime.datetime) -> int:
    tomorrow = utc_day_start(now) + datetime.timedelta(days=1)
    return max(1, math.ceil((tomorrow - now).total_seconds()))


class DemoQuota:
    """Anonymous predictions per address per UTC day. `acquire` reserves one before the create is
    forwarded; `release(kept=False)` gives it back when the create failed."""

    per_day: int

    async def acquire(self, caller_id: str, now: datetime.datetime) -> None:
        raise NotImplementedError

    async def release(self, caller_id: str, now: datetime.datetime, *, kept: bool) -> None:
        raise NotImplementedError

    async def used(self, caller_id: str, now: datetime.datetime) -> int:
        raise NotImplementedError

    def _exhausted(self, now: datetime.datetime) -> DemoQuotaExhausted:
        if self.per_day == 0:
            return DemoQuotaExhausted(
                "The free demo is switched off here; use an API key.",
                retry_after=seconds_until_utc_midnight(now),
            )
        return DemoQuotaExhausted(
            f"The free demo allows {self.per_day} predictions a day from one address, and this one "
            "has used them. Try again tomorrow (UTC), or get an API key.",
            retry_after=seconds_until_utc_midnight(now),
        )


class MemoryQuota(DemoQuota):
    """One process: the day's predictions are counted in the ledger (so a restart forgets
    nothing), plus the creates in flight here, so concurrent requests cannot slip past."""

    def __init__(self, per_day: int, count: Callable[[str, str], Awaitable[int]]) -> None:
        self.per_day = per_day
        self._count = count  # (caller id, since) -> predictions in the ledger
        self._in_flight: dict[str, int] = {}

    async def acquire(self, caller_id: str, now: datetime.datetime) -> None:
        used = await self.used(caller_id, now)
        if self.per_day == 0 or used >= self.per_day:
            raise self._exhausted(now)
        self._in_flight[caller_id] = self._in_flight.get(caller_id, 0) + 1

    async def release(self, caller_id: str, now: datetime.datetime, *, kept: bool) -> None:
        remaining = self._in_flight.get(caller_id, 0) - 1
        if remaining > 0:
            self._in_flight[caller_id] = remaining
        else:
            self._in_flight.pop(caller_id, None)

    async def used(self, caller_id: str, now: datetime.datetime) -> int:
        since = utc_day_start(now).isoformat(timespec="microseconds")
        return await self._count(caller_id, since) + self._in_flight.get(caller_id, 0)


# KEYS[1] the day's counter; ARGV[1] the quota, ARGV[2] its lifetime. One round trip, atomic.
_RESERVE = """
local used = redis.call('INCR', KEYS[1])
if used == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if used > tonumber(ARGV[1]) then redis.call('DECR', KEYS[1]) return -1 end
return used
"""


class RedisQuota(DemoQuota):
    """Every process: one counter per address and UTC day in Redis, of creates admitted (held or
    kept); a create that failed gives its slot back."""

    def __init__(self, per_day: int, redis: Redis) -> None:
        self.per_day = per_day
        self._redis = redis
        self._reserve: Any = redis.register_script(_RESERVE)

    async def acquire(self, caller_id: str, now: datetime.datetime) -> None:
        if self.per_day == 0:
            raise self._exhausted(now)
        try:
            used = await self._reserve(keys=[self._key(caller_id, now)], args=[self.per_day, 2 * 86400])
        except RedisError as error:
            raise StorageUnavailable(f"the demo quota's store cannot be reached: {error}") from None
        if int(used) < 0:
            raise self._exhausted(now)

    async def release(self, caller_id: str, now: datetime.datetime, *, kept: bool) -> None:
        if kept:
            return
        # If Redis is gone, the slot stays taken: the visitor loses one demo prediction, nobody pays.
        with contextlib.suppress(RedisError):
            await self._redis.decr(self._key(caller_id, now))

    async def used(self, caller_id: str, now: datetime.datetime) -> int:
        try:
            value = await self._redis.get(self._key(caller_id, now))
        except RedisError as error:
            raise StorageUnavailable(f"the demo quota's store cannot be reached: {error}") from None
        return int(value or 0)

    def _key(self, caller_id: str, now: datetime.datetime) -> str:
        return f"modelfolio:demo:{utc_day_start(now).date().isoformat()}:{caller_id}"

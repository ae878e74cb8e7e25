"""How much a caller may do: `[[ratelimits]]` windows in memory, and the anonymous demo quota
counted from the ledger (so it survives a restart)."""

from __future__ import annotations

import datetime
import math
import time
from collections import deque
from collections.abc import Callable

from proxy.config import RateLimit
from proxy.errors import DemoQuotaExhausted, TooManyRequests


class RateLimiter:
    """Sliding-window log per (limit, caller): exact, and at most `limit` timestamps each."""

    def __init__(self, limits: tuple[RateLimit, ...], clock: Callable[[], float] = time.monotonic):
        self._limits = limits
        self._clock = clock
        self._windows: dict[tuple[str, str], deque[float]] = {}
        self._checks = 0

    def hit(self, caller_id: str, *, creates: bool) -> None:
        """Counts one request, or raises TooManyRequests without counting it."""
        now = self._clock()
        applicable = [limit for limit in self._limits if creates or limit.applies_to == "requests"]
        windows = [self._window(limit, caller_id, now) for limit in applicable]
        for limit, window in zip(applicable, windows, strict=True):
            if len(window) >= limit.limit:
                wait = max(1, math.ceil(window[0] + limit.period - now))
                raise TooManyRequests(
                    f"Too many requests: the limit is {limit.limit} "
                    f"{'predictions' if limit.applies_to == 'predictions' else 'requests'} "
                    f"every {limit.period} seconds. Try again in {wait} seconds.",
                    retry_after=wait,
                )
        for window in windows:
            window.append(now)
        self._sweep(now)

    def _window(self, limit: RateLimit, caller_id: str, now: float) -> deque[float]:
        window = self._windows.setdefault((limit.name, caller_id), deque())
        while window and window[0] <= now - limit.period:
            window.popleft()
        return window

    def _sweep(self, now: float) -> None:
        # Forget idle callers now and then, so memory follows active callers only.
        self._checks += 1
        if self._checks % 1000:
            return
        periods = {limit.name: limit.period for limit in self._limits}
        for key, window in list(self._windows.items()):
            if not window or window[-1] <= now - periods.get(key[0], 0):
                del self._windows[key]


def utc_day_start(now: datetime.datetime) -> datetime.datetime:
    return now.astimezone(datetime.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def seconds_until_utc_midnight(now: datetime.datetime) -> int:
    tomorrow = utc_day_start(now) + datetime.timedelta(days=1)
    return max(1, math.ceil((tomorrow - now).total_seconds()))


class DemoQuota:
    """Anonymous predictions per address per UTC day. `used` comes from the ledger; creates
    still in flight are held here, so concurrent requests cannot slip past the quota."""

    def __init__(self, per_day: int) -> None:
        self.per_day = per_day
        self._in_flight: dict[str, int] = {}

    def acquire(self, caller_id: str, used_today: int, now: datetime.datetime) -> None:
        pending = self._in_flight.get(caller_id, 0)
        if self.per_day == 0:
            raise DemoQuotaExhausted(
                "The free demo is switched off here; use an API key.",
                retry_after=seconds_until_utc_midnight(now),
            )
        if used_today + pending >= self.per_day:
            raise DemoQuotaExhausted(
                f"The free demo allows {self.per_day} predictions a day from one address, and "
                "this one has used them. Try again tomorrow (UTC), or get an API key.",
                retry_after=seconds_until_utc_midnight(now),
            )
        self._in_flight[caller_id] = pending + 1

    def release(self, caller_id: str) -> None:
        remaining = self._in_flight.get(caller_id, 0) - 1
        if remaining > 0:
            self._in_flight[caller_id] = remaining
        else:
            self._in_flight.pop(caller_id, None)

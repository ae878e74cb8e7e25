"""Rate limits per caller in memory, and the demo quota's arithmetic."""

from __future__ import annotations

import datetime

import pytest

from proxy.config import RateLimit
from proxy.errors import DemoQuotaExhausted, TooManyRequests
from proxy.limits import DemoQuota, RateLimiter, seconds_until_utc_midnight, utc_day_start


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_caller_past_the_limit_waits_until_the_oldest_request_leaves_the_window() -> None:
    clock = Clock()
    limiter = RateLimiter((RateLimit("predictions", 3, 10),), clock)
    for _ in range(3):
        limiter.hit("alice", creates=True)
        clock.now += 1
    with pytest.raises(TooManyRequests) as refused:
        limiter.hit("alice", creates=True)
    assert refused.value.retry_after == 7  # the first left at 1000 + 10, it is now 1003
    limiter.hit("bob", creates=True)  # others are not affected
    clock.now = 1010.0
    limiter.hit("alice", creates=True)


def test_a_refused_request_does_not_count() -> None:
    clock = Clock()
    limiter = RateLimiter((RateLimit("p", 1, 10),), clock)
    limiter.hit("alice", creates=True)
    for _ in range(5):
        with pytest.raises(TooManyRequests):
            limiter.hit("alice", creates=True)
    clock.now += 10
    limiter.hit("alice", creates=True)


def test_prediction_limits_ignore_polls_and_request_limits_count_everything() -> None:
    limiter = RateLimiter((RateLimit("predictions", 1, 60), RateLimit("api", 3, 60, "requests")), Clock())
    limiter.hit("alice", creates=True)
    limiter.hit("alice", creates=False)
    limiter.hit("alice", creates=False)
    with pytest.raises(TooManyRequests, match="3 requests every 60 seconds"):
        limiter.hit("alice", creates=False)


def test_the_demo_quota_counts_requests_still_in_flight() -> None:
    now = datetime.datetime(2025, 6, 1, 12, tzinfo=datetime.UTC)
    quota = DemoQuota(2)
    quota.acquire("x", used_today=1, now=now)
    with pytest.raises(DemoQuotaExhausted) as refused:
        quota.acquire("x", used_today=1, now=now)
    assert refused.value.retry_after == 12 * 3600
    quota.release("x")
    quota.acquire("x", used_today=1, now=now)


def test_a_switched_off_demo_says_so() -> None:
    with pytest.raises(DemoQuotaExhausted, match="switched off"):
        DemoQuota(0).acquire("x", 0, datetime.datetime.now(datetime.UTC))


def test_the_utc_day_starts_at_midnight_utc_whatever_the_callers_zone() -> None:
    tokyo = datetime.timezone(datetime.timedelta(hours=9))
    now = datetime.datetime(2025, 6, 2, 8, 0, tzinfo=tokyo)  # 23:00 UTC on June 1
    assert utc_day_start(now) == datetime.datetime(2025, 6, 1, tzinfo=datetime.UTC)
    assert seconds_until_utc_midnight(now) == 3600
    almost = datetime.datetime(2025, 6, 1, 23, 59, 59, 500000, tzinfo=datetime.UTC)
    assert seconds_until_utc_midnight(almost) == 1

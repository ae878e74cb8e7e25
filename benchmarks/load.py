"""Closed-loop load: `concurrency` clients, each sending its next request when the last returns."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx


@dataclass(frozen=True)
class Target:
    url: str
    body: bytes
    headers: dict[str, str]


@dataclass
class Level:
    concurrency: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    errors: dict[str, int] = field(default_factory=dict)
    other_cpu: float = 0.0  # cores busy outside the server and this client, on average

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def percentile_ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def send(client: httpx.AsyncClient, target: Target, method: str = "POST") -> str | None:
    """One prediction (a create, or with GET a poll); None when it succeeded, else what went wrong."""
    try:
        if method == "GET":
            response = await client.get(target.url, headers=target.headers)
        else:
            response = await client.post(target.url, content=target.body, headers=target.headers)
    except httpx.HTTPError as exc:
        return type(exc).__name__
    if response.status_code // 100 != 2:
        return f"HTTP {response.status_code}"
    status = json.loads(response.content).get("status")
    return None if status == "succeeded" else f"status {status}"


async def first_success(target: Target, deadline_s: float, gave_up: Callable[[], bool]) -> None:
    """Returns at the first successful prediction, polling every 50 ms (for the cold start)."""
    started = time.perf_counter()
    error = None
    async with httpx.AsyncClient(timeout=30) as client:
        while time.perf_counter() - started < deadline_s and not gave_up():
            if (error := await send(client, target)) is None:
                return
            await asyncio.sleep(0.05)
    raise TimeoutError(f"no successful prediction in {time.perf_counter() - started:.0f} s (last: {error})")


async def closed_loop(target: Target, concurrency: int, seconds: float, method: str = "POST") -> Level:
    level = Level(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        started = time.perf_counter()
        end = started + seconds

        async def worker() -> None:
            while (now := time.perf_counter()) < end:
                error = await send(client, target, method)
                if time.perf_counter() > end:
                    break  # finished past the window: not counted, like a request never sent
                if error is None:
                    level.latencies.append(time.perf_counter() - now)
                else:
                    level.errors[error] = level.errors.get(error, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        level.seconds = end - started
    return level

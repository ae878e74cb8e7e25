"""The proxy grown up: three `python -m proxy` processes on one PostgreSQL and one Redis.

A burst of paid predictions spread over them, one killed with SIGKILL mid-burst and started
again, the test Stripe failing 30 % of calls, and every client retrying a dropped request with its
Idempotency-Key: every prediction is billed exactly once, in the ledger and at Stripe, no
prediction is billed that no caller received, and `billing reconcile` agrees. Limits and the demo
quota hold across the processes as one.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

from devtools.teststripe.server import create_app as create_stripe
from proxy.auth import hash_key, new_api_key
from tests.support.billing import make_catalog, open_stores, subscribe, wait_until
from tests.support.databases import new_database
from tests.support.processes import proxy_process, reconcile
from tests.support.proxy import IMAGE, TOKEN, FakeInference
from tests.support.servers import serve

BURST, KILL_AFTER, CUSTOMERS = 1000, 300, 4
CREATE = "/v1/models/modelfolio/digits/predictions"
pytestmark = pytest.mark.timeout(600)


class KnownTimes(FakeInference):
    """Each prediction takes a time known from its id, so every bill can be checked against it."""

    def _state(self, prediction_id: str, *, done: bool) -> dict[str, Any]:
        self.predict_time = expected_ms(prediction_id) / 1000
        return super()._state(prediction_id, done=done)


def expected_ms(prediction_id: str) -> int:
    return 10 + int(hashlib.sha256(prediction_id.encode()).hexdigest()[:6], 16) % 491


def config_dir(tmp_path: Path, extra: str = "") -> Path:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "wrangler.toml").write_text(
        '[vars]\nOWNER = "modelfolio"\nUPSTREAM_URL = "http://127.0.0.1:9"\n'
        f'PUBLIC_ORIGIN = "http://127.0.0.1:8000"\n{extra}'
    )
    return folder


def environment(
    database_url: str, redis_url: str, upstream: str, stripe_url: str | None = None
) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "MODELFOLIO_UPSTREAM_URL": upstream,
        "INFERENCE_TOKEN": TOKEN,
    }
    if stripe_url is not None:
        env |= {
            "STRIPE_SECRET_KEY": "sk_test_scale",
            "MODELFOLIO_BILLING_STRIPE_API_BASE": stripe_url,
            "MODELFOLIO_BILLING_STRIPE_METER_EVENTS_BASE": stripe_url,
            "MODELFOLIO_BILLING_POLL_INTERVAL_S": "0.1",
            "MODELFOLIO_BILLING_BACKOFF_BASE_S": "0.01",
            "MODELFOLIO_BILLING_BACKOFF_MAX_S": "0.2",
            "MODELFOLIO_BILLING_TIMEOUT_S": "2",
            "MODELFOLIO_BILLING_LEASE_S": "3",  # a killed worker's lanes pass on within seconds
        }
    return env


@dataclass
class Fleet:
    """Proxy processes behind no load balancer: each client picks one, and another on failure."""

    urls: list[str]
    database_url: str
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pick(self, n: int) -> str:
        with self.lock:
            return self.urls[n % len(self.urls)]

    def replace(self, dead: str, new: str) -> None:
        with self.lock:
            self.urls[self.urls.index(dead)] = new


def paid_prediction(fleet: Fleet, n: int, key: str, dropped: list[int]) -> dict[str, Any]:
    """One logical request, as a careful client makes it: one Idempotency-Key, retried on a
    dropped connection or a 5xx, on another proxy, until it is answered."""
    headers = {"Authorization": f"Bearer {key}", "Prefer": "wait", "Idempotency-Key": str(uuid.uuid4())}
    for attempt in range(60):
        try:
            answer = httpx.post(
                fleet.pick(n + attempt) + CREATE, json={"input": IMAGE}, headers=headers, timeout=30
            )
        except httpx.TransportError:
            dropped.append(n)
            continue
        if answer.status_code < 500:
            answer.raise_for_status()
            prediction: dict[str, Any] = answer.json()
            return prediction
    raise AssertionError(f"request {n} was never answered")


@contextlib.contextmanager
def customers_and_keys(database_url: str, stripe_url: str) -> Iterator[tuple[list[str], list[str]]]:
    sdk = stripe.StripeClient(
        "sk_test_setup", base_addresses={"api": stripe_url}, http_client=stripe.RequestsClient()
    )
    customers = [sdk.v1.customers.create({"name": f"scale {i}"}).id for i in range(CUSTOMERS)]
    keys = []
    with open_stores(database_url) as stores:
        for customer in customers:
            key_id, key = new_api_key()
            stores.ledger.add_api_key(key_id, hash_key(key), customer, "2025-06-01T00:00:00+00:00")
            subscribe(stripe_url, stores, customer)  # what Stripe charges the key's predictions
            keys.append(key)
    yield customers, keys


def test_three_proxies_one_killed_mid_burst_bill_every_prediction_once(
    tmp_path: Path, postgres: str, redis_url: str
) -> None:
    database_url = new_database(postgres)
    stripe_app, fake = create_stripe(seed=11), KnownTimes()
    state = stripe_app.state.stripe
    log = tmp_path / "proxies.log"
    with serve(stripe_app) as stripe_url, serve(fake.app()) as upstream:
        make_catalog(stripe_url)
        with customers_and_keys(database_url, stripe_url) as (customers, keys):
            pass
        folder = config_dir(tmp_path, '[[ratelimits]]\nname = "predictions"\nlimit = 100000\nperiod = 10\n')
        env = environment(database_url, redis_url, upstream, stripe_url)
        state.faults.set(error=0.3)  # Stripe fails 30 % of calls, all through the burst
        received: dict[str, int] = {}
        dropped: list[int] = []  # requests whose connection the kill cut, then retried
        with contextlib.ExitStack() as stack:
            started = [stack.enter_context(proxy_process(env, folder, log)) for _ in range(3)]
            fleet = Fleet([url for _, url in started], database_url)
            victim, victim_url = started[0]
            killed = threading.Event()

            def one(n: int) -> None:
                prediction = paid_prediction(fleet, n, keys[n % CUSTOMERS], dropped)
                assert (
                    prediction["status"] == "succeeded" and prediction["billing"]["billed_to"] == "customer"
                )
                received[prediction["id"]] = prediction["metrics"]["predict_time_ms"]
                if len(received) >= KILL_AFTER and not killed.is_set():
                    killed.set()
                    os.kill(victim.pid, signal.SIGKILL)
                    fleet.replace(victim_url, stack.enter_context(proxy_process(env, folder, log))[1])

            with ThreadPoolExecutor(16) as pool:
                list(pool.map(one, range(BURST)))
            assert victim.wait(30) == -signal.SIGKILL

            def drained() -> bool:
                with open_stores(database_url) as stores:
                    return stores.usage.outbox_stats().backlog == 0

            wait_until(drained, "the outbox to drain through three workers", timeout_s=240)
        state.faults.set(error=0)
        reconciled = reconcile(env, folder)

    with open_stores(database_url) as stores:
        rows = {customer: stores.usage.usage_of(f"customer:{customer}") for customer in customers}
        dead = stores.usage.dead_meter_events()
    billed = {row.prediction_id: row.predict_time_ms for usage in rows.values() for row in usage}
    at_stripe = collections.Counter(event["identifier"] for event in state.events)
    assert dropped and len(received) == BURST and dead == []  # the kill landed mid-request
    assert billed == received  # every prediction a caller received billed, and no other
    assert all(ms == expected_ms(prediction_id) for prediction_id, ms in billed.items())
    assert set(at_stripe) == set(billed) and set(at_stripe.values()) == {1}  # once each at Stripe
    now = int(time.time())
    for customer, usage in rows.items():
        meters = state.of("billing.meter")
        stripe_ms = sum(int(state.aggregated(m["id"], customer, now - 3600, now + 60)) for m in meters)
        assert stripe_ms == sum(row.predict_time_ms for row in usage)
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    assert "0 difference(s)" in reconciled.stdout
    ran = len(fake._predictions)
    print(
        f"\n{BURST} requests over 3 proxies, one SIGKILLed after {KILL_AFTER} ({len(dropped)} cut off and "
        f"retried): {ran} predictions ran, "
        f"{len(billed)} billed, {sum(billed.values())} ms in the ledger = "
        f"{sum(int(e['payload']['value']) for e in state.events)} ms at Stripe; "
        f"Stripe faults: { {k: v for k, v in state.calls.items() if not k.startswith(('GET', 'POST'))} }"
    )


@pytest.fixture
def small_fleet(tmp_path: Path, postgres: str, redis_url: str, fake: FakeInference) -> Iterator[Fleet]:
    """Three proxies with tight limits: 20 predictions a minute per caller, 15 demo predictions a day."""
    database_url = new_database(postgres)
    limits = '[[ratelimits]]\nname = "predictions"\nlimit = 20\nperiod = 60\n'
    folder = config_dir(tmp_path, limits)
    with serve(fake.app()) as upstream, contextlib.ExitStack() as stack:
        env = environment(database_url, redis_url, upstream) | {"MODELFOLIO_DEMO_DAILY_QUOTA": "15"}
        urls = [
            stack.enter_context(proxy_process(env, folder, tmp_path / "proxies.log"))[1] for _ in range(3)
        ]
        yield Fleet(urls, database_url)


def burst(fleet: Fleet, count: int, headers: dict[str, str]) -> list[httpx.Response]:
    def one(n: int) -> httpx.Response:
        return httpx.post(fleet.pick(n) + CREATE, json={"input": IMAGE}, headers=headers, timeout=30)

    with ThreadPoolExecutor(12) as pool:
        return list(pool.map(one, range(count)))


def test_a_key_gets_its_limit_once_across_three_proxies_not_once_per_proxy(small_fleet: Fleet) -> None:
    database_url = small_fleet.database_url
    key_id, key = new_api_key()
    with open_stores(database_url) as stores:
        stores.ledger.add_api_key(key_id, hash_key(key), "cus_limited", "2025-06-01T00:00:00+00:00")
    answers = burst(small_fleet, 60, {"Authorization": f"Bearer {key}"})
    statuses = collections.Counter(answer.status_code for answer in answers)
    assert statuses == {201: 20, 429: 40}
    refused = next(answer for answer in answers if answer.status_code == 429)
    assert (
        1 <= int(refused.headers["retry-after"]) <= 60 and "20 predictions every 60 seconds" in refused.text
    )


def test_the_demo_quota_is_one_quota_across_three_proxies(small_fleet: Fleet) -> None:
    answers = burst(small_fleet, 45, {})
    statuses = collections.Counter(answer.status_code for answer in answers)
    assert statuses == {201: 15, 429: 30}  # the quota's, and the rate limit's once 20 were counted
    assert any("free demo allows 15 predictions a day" in a.text for a in answers if a.status_code == 429)

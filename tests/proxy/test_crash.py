"""The proxy killed with SIGKILL in the middle of a burst of paid predictions, then restarted on
the same ledger: once the outbox drains, every prediction a client saw succeed is billed exactly
once, in the ledger and at the test Stripe, and `billing reconcile` finds no difference.

The proxy runs as a real `python -m proxy` process; the inference server (a fake that succeeds
every prediction with a known predict_time) and the test Stripe run in this process, on loopback.
"""

from __future__ import annotations

import collections
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import httpx
import stripe

from devtools.teststripe.server import create_app as create_stripe
from proxy.auth import hash_key, new_api_key
from tests.support.billing import make_catalog, open_stores, subscribe, wait_until
from tests.support.processes import proxy_process, reconcile
from tests.support.proxy import IMAGE, TOKEN, FakeInference
from tests.support.servers import serve

BURST, KILL_AFTER, AFTER_RESTART = 240, 60, 20


class KnownTimes(FakeInference):
    """Prediction n takes (10 + 37n mod 491) ms, so every bill can be checked against it."""

    def _state(self, prediction_id: str, *, done: bool) -> dict[str, Any]:
        self.predict_time = expected_ms(prediction_id) / 1000
        return super()._state(prediction_id, done=done)


def expected_ms(prediction_id: str) -> int:
    return 10 + int(prediction_id[4:8]) * 37 % 491


def paid_prediction(url: str, key: str) -> tuple[str, int]:
    answer = httpx.post(
        f"{url}/v1/models/modelfolio/digits/predictions",
        json={"input": IMAGE},
        headers={"Authorization": f"Bearer {key}", "Prefer": "wait"},
        timeout=30,
    )
    answer.raise_for_status()
    prediction = answer.json()
    assert prediction["status"] == "succeeded" and prediction["billing"]["billed_to"] == "customer"
    return prediction["id"], prediction["metrics"]["predict_time_ms"]


def test_a_proxy_killed_mid_burst_bills_every_seen_prediction_exactly_once(tmp_path: Path) -> None:
    stripe_app, fake = create_stripe(seed=9), KnownTimes()
    state = stripe_app.state.stripe
    with serve(stripe_app) as stripe_url, serve(fake.app()) as upstream:
        make_catalog(stripe_url)
        sdk = stripe.StripeClient(
            "sk_test_crash", base_addresses={"api": stripe_url}, http_client=stripe.RequestsClient()
        )
        customers = [sdk.v1.customers.create({"name": f"crash {i}"}).id for i in range(3)]
        ledger_path = tmp_path / "ledger.sqlite3"
        keys = []
        with open_stores(f"sqlite:///{ledger_path}") as stores:
            for customer in customers:
                key_id, key = new_api_key()
                stores.ledger.add_api_key(key_id, hash_key(key), customer, "2025-06-01T00:00:00+00:00")
                subscribe(stripe_url, stores, customer)  # what Stripe charges the key's predictions
                keys.append(key)
        config_dir = tmp_path / "config"
        config_dir.mkdir()
        (config_dir / "wrangler.toml").write_text(
            '[vars]\nOWNER = "modelfolio"\nUPSTREAM_URL = "http://127.0.0.1:9"\n'
            'PUBLIC_ORIGIN = "http://127.0.0.1:8000"\n'
        )
        env = {
            "PATH": os.environ.get("PATH", ""),
            "MODELFOLIO_LEDGER_PATH": str(ledger_path),
            "MODELFOLIO_UPSTREAM_URL": upstream,
            "MODELFOLIO_BILLING_STRIPE_API_BASE": stripe_url,
            "MODELFOLIO_BILLING_STRIPE_METER_EVENTS_BASE": stripe_url,
            "MODELFOLIO_BILLING_POLL_INTERVAL_S": "0.05",
            "MODELFOLIO_BILLING_BACKOFF_BASE_S": "0.01",
            "MODELFOLIO_BILLING_BACKOFF_MAX_S": "0.2",
            "MODELFOLIO_BILLING_TIMEOUT_S": "2",
            # The killed worker's lanes pass to the restarted one within seconds, not the default
            # minute, which took half of the drain's wait below.
            "MODELFOLIO_BILLING_LEASE_S": "3",
            "STRIPE_SECRET_KEY": "sk_test_crash",
            "INFERENCE_TOKEN": TOKEN,
        }
        # Stripe misbehaves too, so the kill also lands on deliveries half done.
        state.faults.set(error=0.2, lose_response=0.1)
        seen: dict[str, int] = {}
        failed = 0
        log = tmp_path / "proxy.log"
        with proxy_process(env, config_dir, log) as (process, url):
            with ThreadPoolExecutor(8) as pool:
                futures = [pool.submit(paid_prediction, url, keys[i % 3]) for i in range(BURST)]
                for future in as_completed(futures):
                    try:
                        prediction_id, ms = future.result()
                    except (httpx.HTTPError, AssertionError):
                        failed += 1
                        continue
                    seen[prediction_id] = ms
                    if len(seen) == KILL_AFTER:
                        os.kill(process.pid, signal.SIGKILL)
            assert process.wait(30) == -signal.SIGKILL
        killed_with = len(seen)
        assert failed > 0 and killed_with >= KILL_AFTER  # the kill did land mid-burst

        with proxy_process(env, config_dir, log) as (process, url):
            for i in range(AFTER_RESTART):
                prediction_id, ms = paid_prediction(url, keys[i % 3])
                seen[prediction_id] = ms

            def drained() -> bool:
                with open_stores(f"sqlite:///{ledger_path}") as stores:
                    return stores.usage.undelivered_meter_events() == []

            wait_until(drained, "the outbox to drain after the restart", timeout_s=120)
            state.faults.set(error=0, lose_response=0)
            reconciled = reconcile(env, config_dir)

        with open_stores(f"sqlite:///{ledger_path}") as stores:
            rows = {customer: stores.usage.usage_of(f"customer:{customer}") for customer in customers}
            dead = stores.usage.dead_meter_events()
        billed = {row.prediction_id: row.predict_time_ms for usage in rows.values() for row in usage}
        at_stripe = collections.Counter(event["identifier"] for event in state.events)
        assert dead == []
        assert set(seen) <= set(billed)  # every success a client saw is billed...
        assert all(seen[p] == billed[p] == expected_ms(p) for p in seen)  # ...at its predict_time
        assert set(at_stripe) == set(billed) and set(at_stripe.values()) == {1}  # once at Stripe
        now = int(time.time())
        for customer, usage in rows.items():
            stripe_ms = sum(
                int(state.aggregated(m["id"], customer, now - 3600, now + 60))
                for m in state.of("billing.meter")
            )
            assert stripe_ms == sum(row.predict_time_ms for row in usage)
        assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
        assert "0 difference(s)" in reconciled.stdout
        print(
            f"\nSIGKILL after {killed_with} seen successes ({failed} requests cut off); "
            f"{len(seen)} seen in all, {len(billed)} billed, {sum(billed.values())} ms in the ledger = "
            f"{sum(int(e['payload']['value']) for e in state.events)} ms at Stripe; "
            f"faults: { {k: v for k, v in state.calls.items() if not k.startswith(('GET', 'POST'))} }"
        )

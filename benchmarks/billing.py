"""Billing's costs: the ledger write on the request path, and the outbox drain rate to Stripe.

    python -m benchmarks.billing [--predictions 2000] [--events 1000] [--customers 20]

Each figure is printed beside a baseline measured in the same run: a bare durable SQLite INSERT
for the ledger write; for the drain, the worker held to v1 (one call per event, as before the v2
stream) and plain concurrent httpx POSTs of v1 events to the same test Stripe (the ceiling of the
one-call-per-event way against that server). The worker itself streams a backlog over
`[billing] stream_above` (default 200) through Stripe's v2 meter event stream.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import stripe

from proxy.billing import stripe_api
from proxy.billing.metering import MeterWorker
from proxy.billing.money import meter_event_name
from proxy.billing.store import Usage, UsageStore
from proxy.config import BillingConfig
from proxy.ledger import Ledger
from proxy.storage import open_database
from tests.support.servers import bound_socket, url_of

MODEL = "modelfolio/digits"
KEY = "sk_test_benchmark"


def usage(i: int, customer: str | None, tag: str = "bench") -> Usage:
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
    return Usage(
        prediction_id=f"{tag}{i:021d}",
        caller=f"customer:{customer}",
        stripe_customer=customer,
        model=MODEL,
        version=None,
        predict_time_ms=1250 + i % 7,
        price_per_second="0.0005",
        amount="0.000625",
        created_at=now,
    )


def ledger_write(folder: Path, n: int) -> tuple[float, float]:
    """ms per billed prediction (creation record + usage + outbox), and per bare INSERT."""
    database = open_database(f"sqlite:///{folder / 'ledger.sqlite3'}")
    ledger, store = Ledger(database), UsageStore(database)
    started = time.perf_counter()
    for i in range(n):
        row = usage(i, "cus_bench")
        ledger.record_prediction(row.prediction_id, row.caller, MODEL, row.created_at)
        store.record_usage(row, meter_event_name(MODEL))
    ours = (time.perf_counter() - started) / n * 1000
    database.close()
    db = sqlite3.connect(folder / "bare.sqlite3", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE t (id TEXT PRIMARY KEY, v INTEGER)")
    started = time.perf_counter()
    for i in range(n):
        db.execute("INSERT INTO t VALUES (?, ?)", (f"bench{i:021d}", i))
    bare = (time.perf_counter() - started) / n * 1000
    db.close()
    return ours, bare


def start_stripe() -> tuple[subprocess.Popen[bytes], str]:
    """The project's test Stripe in its own process, so it does not share the worker's GIL."""
    sock = bound_socket()
    url = url_of(sock)
    port = sock.getsockname()[1]
    sock.close()
    server = subprocess.Popen(
        [sys.executable, "-m", "devtools.teststripe", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/v1/customers", headers={"Authorization": f"Bearer {KEY}"})
            return server, url
        except httpx.TransportError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError("the test Stripe did not start")


def setup_stripe(url: str, customers: int) -> list[str]:
    client = stripe.StripeClient(
        KEY, base_addresses={"api": url}, http_client=stripe.HTTPXClient(allow_sync_methods=True)
    )
    client.v1.billing.meters.create(
        {
            "display_name": MODEL,
            "event_name": meter_event_name(MODEL),
            "default_aggregation": {"formula": "sum"},
        }
    )
    return [client.v1.customers.create({"name": f"c{i}"}).id for i in range(customers)]


def drain_rate(
    folder: Path, url: str, ids: list[str], events: int, concurrency: int, *, stream: bool
) -> float:
    """The worker as the proxy runs it (stream: True), or held to v1 calls (the baseline)."""
    tag = "stream" if stream else "vone"
    database = open_database(f"sqlite:///{folder / f'drain-{tag}.sqlite3'}")
    store = UsageStore(database)
    for i in range(events):
        store.record_usage(usage(i, ids[i % len(ids)], tag), meter_event_name(MODEL))

    async def run() -> float:
        billing = BillingConfig(stripe_api_base=url, stripe_meter_events_base=url, concurrency=concurrency)
        connection = stripe_api.connect(KEY, billing)
        worker = MeterWorker(
            store,
            connection.client,
            concurrency=concurrency,
            rng=random.Random(1),
            stream_above=billing.stream_above if stream else None,
        )
        started = time.perf_counter()
        try:
            await worker.drain_once()
        finally:
            await connection.aclose()
        return events / (time.perf_counter() - started)

    rate = asyncio.run(run())
    database.close()
    return rate


def raw_rate(url: str, events: int, customers: int, concurrency: int) -> float:
    client = stripe.StripeClient(
        KEY, base_addresses={"api": url}, http_client=stripe.HTTPXClient(allow_sync_methods=True)
    )
    ids = [client.v1.customers.create({"name": f"r{i}"}).id for i in range(customers)]

    async def run() -> float:
        queue = list(range(events))
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as http:

            async def one_lane() -> None:
                while queue:
                    i = queue.pop()
                    await http.post(
                        "/v1/billing/meter_events",
                        data={
                            "event_name": meter_event_name(MODEL),
                            "identifier": f"raw{i}",
                            "payload[stripe_customer_id]": ids[i % customers],
                            "payload[value]": "1250",
                        },
                    )

            started = time.perf_counter()
            await asyncio.gather(*(one_lane() for _ in range(concurrency)))
            return events / (time.perf_counter() - started)

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=2000)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ours, bare = ledger_write(folder, args.predictions)
        print(
            f"ledger write per billed prediction: {ours:.3f} ms   bare SQLite INSERT: {bare:.3f} ms   "
            f"ratio {ours / bare:.1f}x   (target < 0.5 ms; {args.predictions} predictions, WAL)"
        )
        server, url = start_stripe()
        try:
            ids = setup_stripe(url, args.customers)
            v1 = drain_rate(folder, url, ids, args.events, args.concurrency, stream=False)
            drained = drain_rate(folder, url, ids, args.events, args.concurrency, stream=True)
            ceiling = raw_rate(url, args.events, args.customers, args.concurrency)
        finally:
            server.kill()
            server.wait()
    print(
        f"outbox drain to the test Stripe (v2 stream): {drained:.0f} events/s   the worker held to v1: "
        f"{v1:.0f} events/s   plain v1 httpx POSTs: {ceiling:.0f} events/s   "
        f"ratio to v1 {drained / v1:.1f}x   "
        f"(target >= 1000 events/s; {args.events} events, {args.customers} customers, "
        f"{args.concurrency} in flight; machine: {os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()

"""`python -m benchmarks.proxy`: what the proxy adds, on SQLite and on PostgreSQL + Redis, with one
and three proxy processes, against calling the model server directly, all in one run.

The model server is a stub that answers at once (a create succeeded, a poll the same), so what is
measured is the proxy's own work: the key check, the limits, the forward, the creation record,
the bill (usage row and outbox row) and the answer. Each scenario measures:
- a poll (GET /v1/predictions/{id} of a billed prediction) one at a time: p50, and what the proxy
  adds to the stub's own p50;
- polls and billed creates under closed-loop load (16 clients): requests/s, and requests/s per
  proxy process and per core the proxies used (their CPU seconds over the window), since the
  client, the stub and the database share this machine's cores;
- and, in this process, the ledger write of one billed prediction on each database.
Targets (issue 10): poll p50 added <= 1 ms; >= 2,000 small requests/s per proxy process;
throughput near-linear in processes up to the cores; a billed prediction's write < 1 ms on
PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from benchmarks.load import Level, Target, closed_loop
from benchmarks.procs import Server, cpu_seconds, free_port
from inference.predictions import new_id
from proxy.auth import hash_key, new_api_key
from proxy.billing.money import meter_event_name
from proxy.billing.store import Usage, UsageStore
from proxy.ledger import Ledger
from proxy.storage import open_database
from tests.support.databases import new_database, postgres_server, redis_server

TOKEN = "benchmark-inference-token"  # noqa: S105 -- the stub never checks it
IMAGE = "data:image/png;base64," + "A" * 2000  # never decoded: the stub answers without looking
MODEL = "modelfolio/digits"
CREATE = f"/v1/models/{MODEL}/predictions"


def _prediction(prediction_id: str) -> dict[str, object]:
    return {
        "id": prediction_id,
        "model": MODEL,
        "version": "v1",
        "status": "succeeded",
        "output": "7",
        "created_at": "2026-01-01T00:00:00Z",
        "metrics": {"predict_time": 0.012},
    }


async def _model(request: Request) -> JSONResponse:
    return JSONResponse({"name": request.path_params["name"], "price_per_second": "0.001"})


async def _create(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse(_prediction(new_id()), status_code=201)


async def _get(request: Request) -> JSONResponse:
    return JSONResponse(_prediction(request.path_params["id"]))


stub = Starlette(
    routes=[
        Route("/readyz", lambda request: JSONResponse({"status": "ready"})),
        Route("/v1/models/{owner}/{name}", _model),
        Route("/v1/models/{owner}/{name}/predictions", _create, methods=["POST"]),
        Route("/v1/predictions/{id}", _get),
    ]
)


@dataclass
class Scenario:
    name: str
    urls: list[str]  # where the clients send requests, round robin
    servers: list[Server]  # the proxies (empty: the stub itself)
    key: str | None


@dataclass
class Result:
    scenario: str
    poll_p50_ms: float
    polls: Level
    poll_cores: float
    creates: Level
    create_cores: float
    processes: int


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.proxy", description=__doc__)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--writes", type=int, default=500, help="billed predictions per ledger-write test")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="proxy-bench-")))
        stub_port = free_port()
        env = {"INFERENCE_TOKEN": TOKEN, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        upstream = Server(
            "stub", [sys.executable, "-m", "uvicorn", "benchmarks.proxy:stub", "--port", str(stub_port)],
            env, work / "stub.log",
        )  # fmt: skip
        stack.callback(upstream.stop)
        stub_url = f"http://127.0.0.1:{stub_port}"
        _wait_ready(f"{stub_url}/readyz")
        postgres = stack.enter_context(postgres_server())
        redis_url = stack.enter_context(redis_server())
        writes = {
            "SQLite": ledger_write_ms(f"sqlite:///{work / 'writes.sqlite3'}", args.writes),
            "PostgreSQL": ledger_write_ms(new_database(postgres.url), args.writes),
        }
        scenarios: list[tuple[str, str | None, int]] = [
            ("model server alone", None, 0),
            ("proxy x1, SQLite + memory", f"sqlite:///{work / 'ledger.sqlite3'}", 1),
            ("proxy x1, PostgreSQL + Redis", new_database(postgres.url), 1),
            ("proxy x3, PostgreSQL + Redis", new_database(postgres.url), 3),
        ]
        results = []
        for name, database_url, processes in scenarios:
            with scenario(name, database_url, processes, stub_url, redis_url, work, env) as running:
                results.append(measure(running, args.concurrency, args.duration))
    print(report(results, writes, args))


@contextlib.contextmanager
def scenario(
    name: str,
    database_url: str | None,
    processes: int,
    stub_url: str,
    redis_url: str,
    work: Path,
    env: dict[str, str],
) -> Iterator[Scenario]:
    if database_url is None:
        yield Scenario(name, [stub_url], [], None)
        return
    key = _customer_key(database_url)
    config = work / f"config-{abs(hash(name))}"
    config.mkdir()
    (config / "wrangler.toml").write_text(
        f'[vars]\nOWNER = "modelfolio"\nUPSTREAM_URL = "{stub_url}"\nPUBLIC_ORIGIN = "http://127.0.0.1:8000"\n'
        f'SITE_DIR = "{work}"\n'
    )
    proxy_env = {**env, "DATABASE_URL": database_url}
    if database_url.startswith("postgresql"):
        proxy_env["REDIS_URL"] = redis_url
    servers, urls = [], []
    try:
        for n in range(processes):
            port = free_port()
            command = [sys.executable, "-m", "proxy", "--config-dir", str(config), "--port", str(port)]
            servers.append(Server(f"proxy-{n}", command, proxy_env, work / f"proxy-{n}.log"))
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            _wait_ready(f"{url}/readyz")
        yield Scenario(name, urls, servers, key)
    finally:
        for server in servers:
            server.stop()


def measure(running: Scenario, concurrency: int, duration: float) -> Result:
    headers = {"Content-Type": "application/json", "Prefer": "wait"}
    if running.key:
        headers["Authorization"] = f"Bearer {running.key}"
    body = json.dumps({"input": {"image": IMAGE}}).encode()
    created = httpx.post(running.urls[0] + CREATE, content=body, headers=headers, timeout=30).json()
    poll = [Target(f"{url}/v1/predictions/{created['id']}", b"", headers) for url in running.urls]
    create = [Target(url + CREATE, body, headers) for url in running.urls]
    one = asyncio.run(_spread(poll[:1], 1, duration / 2, get=True))
    polls, poll_cores = _with_cpu(
        running, lambda: asyncio.run(_spread(poll, concurrency, duration, get=True))
    )
    creates, create_cores = _with_cpu(running, lambda: asyncio.run(_spread(create, concurrency, duration)))
    return Result(
        running.name, one.percentile_ms(50), polls, poll_cores, creates, create_cores, len(running.servers)
    )


def _with_cpu(running: Scenario, run: object) -> tuple[Level, float]:
    pids = [pid for server in running.servers for pid in server.pids()]
    before = cpu_seconds(pids)
    level: Level = run()  # type: ignore[operator]
    return level, (cpu_seconds(pids) - before) / level.seconds


async def _spread(targets: list[Target], concurrency: int, seconds: float, *, get: bool = False) -> Level:
    """Closed-loop load spread over the targets (the proxies), as a load balancer would."""
    shares = [max(1, concurrency // len(targets))] * len(targets)
    levels = await asyncio.gather(
        *(
            closed_loop(t, n, seconds, method="GET" if get else "POST")
            for t, n in zip(targets, shares, strict=True)
        )
    )
    merged = Level(concurrency, seconds=levels[0].seconds)
    for level in levels:
        merged.latencies += level.latencies
        for error, count in level.errors.items():
            merged.errors[error] = merged.errors.get(error, 0) + count
    return merged


def ledger_write_ms(url: str, count: int) -> float:
    """ms for one billed prediction's rows (creation record, usage line, outbox row), one at a time."""
    database = open_database(url)
    ledger, store = Ledger(database), UsageStore(database)
    try:
        started = time.perf_counter()
        for i in range(count):
            at = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
            prediction_id = f"bench{i:021d}"
            ledger.record_prediction(prediction_id, "customer:cus_bench", MODEL, at)
            usage = Usage(
                prediction_id, "customer:cus_bench", "cus_bench", MODEL, None, 12, "0.001", "0.000012", at
            )
            store.record_usage(usage, meter_event_name(MODEL))
        return (time.perf_counter() - started) / count * 1000
    finally:
        database.close()


def report(results: list[Result], writes: dict[str, float], args: argparse.Namespace) -> str:
    base = results[0]
    lines = [
        f"proxy benchmark: {args.concurrency} clients, {args.duration:g} s a level, machine: "
        f"{os.cpu_count()} cores shared by the client, the stub, the proxies and the databases",
        "",
        "| scenario | poll p50 (c=1) | added | polls/s | per process | per core | creates/s | per core "
        "| errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        added = r.poll_p50_ms - base.poll_p50_ms
        per_process = f"{r.polls.rps / r.processes:.0f}" if r.processes else "-"
        errors = r.polls.error_count + r.creates.error_count
        lines.append(
            f"| {r.scenario} | {r.poll_p50_ms:.2f} ms | {'-' if not r.processes else f'{added:+.2f} ms'} "
            f"| {r.polls.rps:.0f} | {per_process} | {_per(r.polls.rps, r.poll_cores)} "
            f"| {r.creates.rps:.0f} | {_per(r.creates.rps, r.create_cores)} | {errors} |"
        )
    one, three = results[2], results[3]
    lines += [
        "",
        f"ledger write of one billed prediction: SQLite {writes['SQLite']:.2f} ms, "
        f"PostgreSQL {writes['PostgreSQL']:.2f} ms "
        f"(target < 1 ms on PostgreSQL: {'met' if writes['PostgreSQL'] < 1 else 'missed'})",
        f"poll p50 added by the proxy: {results[1].poll_p50_ms - base.poll_p50_ms:+.2f} ms on SQLite, "
        f"{one.poll_p50_ms - base.poll_p50_ms:+.2f} ms on PostgreSQL (target <= 1 ms)",
        f"3 processes vs 1 on PostgreSQL: {three.polls.rps / one.polls.rps:.2f}x polls/s, "
        f"{three.creates.rps / one.creates.rps:.2f}x creates/s (the machine has {os.cpu_count()} cores)",
    ]
    return "\n".join(lines)


def _per(rps: float, cores: float) -> str:
    return f"{rps / cores:.0f}" if cores > 0.01 else "-"


def _customer_key(database_url: str) -> str:
    database = open_database(database_url)
    try:
        key_id, key = new_api_key()
        Ledger(database).add_api_key(key_id, hash_key(key), "cus_bench", "2026-01-01T00:00:00+00:00")
        return key
    finally:
        database.close()


def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready in 60 s")


if __name__ == "__main__":
    main()

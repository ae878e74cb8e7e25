from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
import redis as redis_lib
from playwright.sync_api import expect

from build import main as build_main
from inference.manifest import MODELS_DIR
from proxy.app import create_app as create_proxy
from proxy.config import load_config
from tests.support.databases import postgres_server, redis_server
from tests.support.inference import TOKEN, inference_server
from tests.support.servers import serve
from tests.support.stack import Stack

# Where to find a Chromium: MODELFOLIO_CHROMIUM wins; then the usual system paths. Playwright's own
# downloaded browsers are used only if none is found (we never run `playwright install` ourselves).
_CHROMIUM_CANDIDATES = [
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
    "/Applications/Chromium.app/Contents/MacOS/Chromium",
]


def chromium_path() -> str | None:
    explicit = os.environ.get("MODELFOLIO_CHROMIUM")
    if explicit:
        return explicit
    return next((c for c in _CHROMIUM_CANDIDATES if Path(c).exists() or shutil.which(c)), None)


# A browser assertion waits on real round trips (proxy, model, test Stripe): Playwright's default
# 5 s is short for a busy 2-core machine with Chromium just started.
expect.set_options(timeout=15_000)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    args = dict(browser_type_launch_args)
    path = chromium_path()
    if path:
        args["executable_path"] = path
    # Nothing but loopback may be contacted: no background fetches, no component updates.
    args["args"] = [
        *args.get("args", []),
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        # A camera that shows a test pattern, for pages allowed to use it; no real device is used.
        "--use-fake-device-for-media-stream",
    ]
    return args


@pytest.fixture(scope="session")
def base_url() -> None:
    # pytest-base-url's own fixture trips a pytest deprecation (warnings are errors here); our
    # tests start their servers on free ports and pass full URLs.
    return None


@pytest.fixture(scope="session")
def upstream() -> Iterator[str]:
    """The real inference server with the shipped, trained models (torch loads once per run)."""
    with inference_server(MODELS_DIR) as url:
        yield url


@pytest.fixture(scope="session")
def stack(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole product as a visitor meets it: the built site and the proxy in front of `upstream`."""
    tmp = tmp_path_factory.mktemp("stack")
    config = load_config(environ={"INFERENCE_TOKEN": TOKEN})
    # Built as `./dev run` builds it: `python build.py` with the secrets in its environment, so a
    # build that copied one into the site would be caught by the tests that look for it.
    with mock.patch.dict(os.environ, {"INFERENCE_TOKEN": TOKEN}):
        assert build_main(["--out", str(tmp / "dist")]) == 0
    # Every test is one address (127.0.0.1) to the proxy: one visitor's daily demo quota and rate
    # limits would be shared by the whole run. Tests of those limits start their own proxy.
    config = dataclasses.replace(
        config,
        upstream_url=upstream,
        site_dir=tmp / "dist",
        ledger_path=tmp / "ledger.sqlite3",
        demo_daily_quota=100_000,
        ratelimits=(),
    )
    with serve(create_proxy(config)) as url:
        yield Stack(url, upstream, config, tmp / "dist", tmp / "ledger.sqlite3")


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A PostgreSQL server for the whole run (each test makes its own database on it)."""
    with postgres_server() as server:
        yield server.url


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    """The run's Redis, emptied: no test sees another's limits, quota or cache."""
    with redis_lib.Redis.from_url(redis_server_url) as client:
        client.flushall()
    return redis_server_url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Playwright's sync API keeps an event loop running on the main thread from its first test to
    # the end of the session, after which asyncio.run() fails there: browser tests go last.
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)

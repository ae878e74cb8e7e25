from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from build import Identity, build
from inference.manifest import MODELS_DIR
from proxy.app import create_app as create_proxy
from proxy.config import Config, load_config
from proxy.ledger import Ledger
from tests.inference_helpers import TOKEN, inference_server
from tests.servers import serve

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


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    args = dict(browser_type_launch_args)
    path = chromium_path()
    if path:
        args["executable_path"] = path
    # Nothing but loopback may be contacted: no background fetches, no component updates.
    args["args"] = [*args.get("args", []), "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-dev-shm-usage"]
    return args


@pytest.fixture(scope="session")
def base_url() -> None:
    # pytest-base-url's own fixture trips a pytest deprecation (warnings are errors here); our
    # tests start their servers on free ports and pass full URLs.
    return None


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """An empty ledger file of the proxy's, for billing tests."""
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    yield ledger
    ledger.close()


@dataclasses.dataclass(frozen=True)
class Stack:
    url: str  # the proxy: what a visitor opens
    upstream: str  # the inference server, with the shipped models
    config: Config
    dist: Path
    ledger: Path


@pytest.fixture(scope="session")
def upstream() -> Iterator[str]:
    """The real inference server with the shipped, trained models (torch loads once per run)."""
    with inference_server(MODELS_DIR, owner=load_config(require_secrets=False).owner) as url:
        yield url


@pytest.fixture(scope="session")
def stack(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole product as a visitor meets it: the built site and the proxy in front of `upstream`."""
    tmp = tmp_path_factory.mktemp("stack")
    config = load_config(environ={"INFERENCE_TOKEN": TOKEN})
    build(tmp / "dist", identity=Identity(config.owner, config.public_origin))
    config = dataclasses.replace(config, upstream_url=upstream, site_dir=tmp / "dist",
                                 ledger_path=tmp / "ledger.sqlite3")
    with serve(create_proxy(config)) as url:
        yield Stack(url, upstream, config, tmp / "dist", tmp / "ledger.sqlite3")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Playwright's sync API keeps an event loop running on the main thread from its first test to
    # the end of the session, after which asyncio.run() fails there: browser tests go last.
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)

"""Fixtures the proxy's tests share: an empty ledger, the test Stripe, and a shop (the test
Stripe with a priced model and the proxy in front of a fake inference server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.teststripe.server import State, create_app
from proxy.billing.store import UsageStore
from proxy.ledger import Ledger
from proxy.storage import Database, open_database
from tests.support.billing import Clock, Shop, open_shop
from tests.support.databases import new_database
from tests.support.proxy import FakeInference
from tests.support.servers import serve


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    """An empty SQLite ledger, migrated: the embedded default."""
    database = open_database(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    yield database
    database.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty ledger on each backend in turn: for what must hold on both."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    else:
        url = new_database(request.getfixturevalue("postgres"))
    database = open_database(url)
    yield database
    database.close()


@pytest.fixture
def ledger(database: Database) -> Ledger:
    return Ledger(database)


@pytest.fixture
def store(database: Database) -> UsageStore:
    """The billing package's usage lines and meter outbox, in the SQLite ledger."""
    return UsageStore(database)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def stripe_server(clock: Clock) -> Iterator[tuple[State, str]]:
    """The test Stripe on loopback: its state (for faults and totals) and its URL."""
    app = create_app(seed=7, clock=clock)
    with serve(app) as url:
        yield app.state.stripe, url


@pytest.fixture
def fake() -> FakeInference:
    """A fake inference server that keeps the contract and records what it was sent."""
    return FakeInference()


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    with open_shop(tmp_path) as opened:
        yield opened

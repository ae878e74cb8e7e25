"""The storage seam: one schema on SQLite and PostgreSQL, made and upgraded by numbered
migrations, and a database that cannot be reached is a 503, never a lost write."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from proxy.billing.store import UsageStore
from proxy.errors import ConfigError, StorageUnavailable
from proxy.storage import Database, open_database
from proxy.storage.migrate import migrate, migrations, schema_version
from proxy.storage.postgres import PostgresDatabase
from proxy.storage.sqlite import SQLiteDatabase
from tests.support.databases import new_database
from tests.support.servers import free_port

AT = "2025-06-01T12:00:00.000000+00:00"


def _open(backend: str, tmp_path: Path, postgres: str | None) -> Database:
    if backend == "sqlite":
        return SQLiteDatabase(tmp_path / "ledger.sqlite3")
    assert postgres is not None
    return PostgresDatabase(new_database(postgres))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_newer_proxy_upgrades_a_database_of_the_first_schema_and_keeps_its_rows(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    postgres = request.getfixturevalue("postgres") if backend == "postgresql" else None
    database = _open(backend, tmp_path, postgres)
    try:
        assert migrate(database, until=1) == [1]
        with database.transaction() as cur:  # what the first proxy wrote: a bill and a dead letter
            cur.execute(
                "INSERT INTO meter_outbox (prediction_id, customer, event_name, value_ms, created_at) "
                "VALUES ('p1', 'cus_A', 'e', 1250, ?)",
                (AT,),
            )
            cur.execute(
                "INSERT INTO meter_dead_letter (prediction_id, customer, event_name, value_ms, created_at, "
                "reason, dead_at) VALUES ('p0', 'cus_A', 'e', 7, ?, 'too old', ?)",
                (AT, AT),
            )
        later = [m.version for m in migrations()[1:]]
        assert migrate(database) == later
        assert migrate(database) == []  # once each
        assert schema_version(database) == later[-1]
        store = UsageStore(database)
        assert [e.prediction_id for e in store.undelivered_meter_events()] == ["p1"]
        assert store.dead_meter_events() == [("p0", "too old")]
        assert store.claim_lanes("w", AT, AT.replace("12:00", "12:01"), limit=5) == [("cus_A", "e")]
    finally:
        database.close()


def test_a_ledger_file_from_before_versioned_migrations_opens_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    with sqlite3.connect(path) as db:  # the first proxy's tables, made without a migrations table
        for statement in migrations()[0].statements:
            db.execute(statement)
        db.execute("INSERT INTO api_keys VALUES ('k1', 'hash', 'cus_A', ?, NULL)", (AT,))
    database = open_database(f"sqlite:///{path}")
    try:
        with database.transaction() as cur:
            cur.execute("SELECT customer FROM api_keys WHERE id = 'k1'")
            assert cur.fetchone()[0] == "cus_A"
        assert schema_version(database) == migrations()[-1].version
    finally:
        database.close()


def test_an_older_proxy_refuses_a_database_a_newer_one_migrated(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    with database.transaction() as cur:
        cur.execute("INSERT INTO schema_migrations VALUES (999, 'from_the_future', ?)", (AT,))
    database.close()
    with pytest.raises(ConfigError, match="schema version 999, which this proxy does not know"):
        open_database(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")


def test_a_failed_write_is_rolled_back_whole(any_database: Database) -> None:
    def write_then_fail() -> None:
        with any_database.transaction() as cur:
            cur.execute("INSERT INTO uploads (id, caller, created_at) VALUES ('f1', 'x', ?)", (AT,))
            raise RuntimeError("the second write of the transaction failed")

    with pytest.raises(RuntimeError):
        write_then_fail()
    with any_database.transaction() as cur:
        cur.execute("SELECT COUNT(*) FROM uploads")
        assert cur.fetchone()[0] == 0


def test_a_database_that_cannot_be_reached_is_storage_unavailable_and_names_no_password() -> None:
    url = f"postgresql://modelfolio:s3cret-pass@127.0.0.1:{free_port()}/ledger"
    with pytest.raises(StorageUnavailable) as raised:
        PostgresDatabase(url)
    assert "s3cret" not in str(raised.value) and "s3cret" not in raised.value.detail
    assert raised.value.status_code == 503 and raised.value.retry_after is not None


def test_the_sqlite_ledger_is_durable_wal_and_makes_its_folder(tmp_path: Path) -> None:
    database = SQLiteDatabase(tmp_path / "nested" / "ledger.sqlite3")
    try:
        with database.transaction() as cur:
            cur.execute("PRAGMA journal_mode")
            assert cur.fetchone()[0] == "wal"
            cur.execute("PRAGMA synchronous")
            assert cur.fetchone()[0] == 2  # FULL: a bill row a caller saw survives a power cut
        assert database.ping()
    finally:
        database.close()


def test_an_unknown_database_url_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="not a database URL: mysql:"):
        open_database("mysql://root@localhost/ledger")

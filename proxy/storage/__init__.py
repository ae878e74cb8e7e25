"""The storage seam: one small interface over the two databases the proxy can keep its state in.

    SQLite (the embedded default)  one file, WAL, one process or several on one machine
    PostgreSQL (DATABASE_URL)      shared by any number of proxy processes on any machines

Every store (proxy/ledger.py, proxy/billing/store.py, proxy/billing/stripe_store.py) writes its SQL
once, in the portable subset both speak: `?` placeholders, TEXT timestamps in ISO 8601 UTC (they
sort as they read), money as TEXT holding an exact decimal, `INSERT ... ON CONFLICT DO NOTHING`.
Where the two differ, the store asks `database.dialect`. The schema is created and upgraded by
numbered migrations (proxy/storage/sql/), run at start on both.

Methods are blocking; the app calls them from worker threads.
"""

from __future__ import annotations

from proxy.errors import ConfigError
from proxy.storage.base import Cursor, Database, StorageUnavailable


def open_database(url: str, *, pool_size: int = 10) -> Database:
    """`sqlite:///path/to/file.sqlite3` or `postgresql://user@host:port/db`, migrated to the newest
    schema."""
    if url.startswith(("postgresql://", "postgres://")):
        from proxy.storage.postgres import PostgresDatabase

        database: Database = PostgresDatabase(url, pool_size=pool_size)
    elif url.startswith("sqlite:///"):
        from proxy.storage.sqlite import SQLiteDatabase

        database = SQLiteDatabase(url.removeprefix("sqlite:///"))
    else:
        raise ConfigError(f"not a database URL: {url.split(':', 1)[0]}:... (sqlite:/// or postgresql://)")
    from proxy.storage.migrate import migrate

    try:
        migrate(database)
    except BaseException:
        database.close()
        raise
    return database


__all__ = ["Cursor", "Database", "StorageUnavailable", "open_database"]

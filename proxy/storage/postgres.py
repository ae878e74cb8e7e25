"""PostgreSQL behind the seam, through psycopg 3 and its connection pool: any number of proxy
processes on any number of machines share it, and its constraints and row locks (not any
process's memory) decide who bills and who delivers what."""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict

from proxy.errors import StorageUnavailable
from proxy.storage.base import Cursor, Database

CONNECT_TIMEOUT_S = 5
POOL_WAIT_S = 3.0  # a request waits this long for a connection before answering 503


class _QmarkCursor:
    """psycopg's cursor, taking the stores' `?` placeholders (their SQL holds no other `?` or %)."""

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._cursor.execute(sql.replace("?", "%s"), params)

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()


class PostgresDatabase(Database):
    dialect = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        info = conninfo_to_dict(url)
        self.where = (
            f"postgresql://{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"
        )
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            # Autocommit: a read is one round trip; writes open their transaction explicitly.
            kwargs={"connect_timeout": CONNECT_TIMEOUT_S, "autocommit": True},
            timeout=POOL_WAIT_S,
            check=psycopg_pool.ConnectionPool.check_connection,  # a connection the server dropped is replaced
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=POOL_WAIT_S)
        except psycopg_pool.PoolTimeout:
            self._pool.close()
            raise StorageUnavailable(f"the database at {self.where} cannot be reached") from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Cursor]:
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
                yield _QmarkCursor(cursor)
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as error:
            raise StorageUnavailable(
                f"the database at {self.where} cannot be reached ({type(error).__name__})"
            ) from None

    @contextlib.contextmanager
    def read(self) -> Iterator[Cursor]:
        try:
            with self._pool.connection() as conn, conn.cursor() as cursor:
                yield _QmarkCursor(cursor)
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as error:
            raise StorageUnavailable(
                f"the database at {self.where} cannot be reached ({type(error).__name__})"
            ) from None

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[Cursor]:
        with self.transaction() as cursor:
            # Released with the transaction; other processes asking for it wait here.
            cursor.execute("SELECT pg_advisory_xact_lock(?)", (zlib.crc32(name.encode()),))
            yield cursor

    def close(self) -> None:
        self._pool.close()

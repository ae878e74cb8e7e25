"""What every database behind the seam offers: transactions that yield a cursor, a ping, a close."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Literal, Protocol

from proxy.errors import StorageUnavailable

Dialect = Literal["sqlite", "postgresql"]


class Cursor(Protocol):
    """The DB-API cursor subset the stores use, with `?` placeholders on both databases."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Database:
    dialect: Dialect
    where: str  # for messages and logs: the file, or host/database (never a password)

    def transaction(self) -> contextlib.AbstractContextManager[Cursor]:
        """One transaction: committed when the block ends, rolled back if it raises. A database
        that cannot be reached raises StorageUnavailable (a 503 to a caller), never a driver error."""
        raise NotImplementedError

    def read(self) -> contextlib.AbstractContextManager[Cursor]:
        """For reads only: a consistent view without taking the write lock (SQLite) or a round
        trip for BEGIN and COMMIT (PostgreSQL). What the hot path (every poll) uses."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def ping(self) -> bool:
        try:
            with self.read() as cur:
                cur.execute("SELECT 1")
                return bool(cur.fetchone()[0] == 1)
        except StorageUnavailable:
            return False

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[Cursor]:
        """A transaction that no other process runs under the same `name` at the same time (for
        migrations): an advisory lock on PostgreSQL, the write lock on SQLite."""
        raise NotImplementedError

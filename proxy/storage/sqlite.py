"""SQLite behind the seam: one file in WAL mode, shared by the threads of a process (one
connection under a lock) and by the processes of one machine (SQLite's own file locks)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from proxy.errors import StorageUnavailable
from proxy.storage.base import Cursor, Database

BUSY_TIMEOUT_S = 10.0  # how long a writer waits for another process's write to finish


class SQLiteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.where = str(self.path)
        self._lock = threading.Lock()
        # isolation_level=None: transactions are begun explicitly (BEGIN IMMEDIATE), so a
        # read-then-write transaction takes the write lock at once instead of failing halfway.
        self._conn = sqlite3.connect(
            self.path, check_same_thread=False, timeout=BUSY_TIMEOUT_S, isolation_level=None
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a bill row the caller was shown survives a power cut, not only a crash of this
        # process (NORMAL can lose the last transactions in WAL mode).
        self._conn.execute("PRAGMA synchronous=FULL")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Cursor]:
        with self._begun("BEGIN IMMEDIATE") as cursor:
            yield cursor

    @contextlib.contextmanager
    def read(self) -> Iterator[Cursor]:
        with self._begun("BEGIN") as cursor:  # deferred: a reader never waits for the write lock
            yield cursor

    @contextlib.contextmanager
    def _begun(self, begin: str) -> Iterator[Cursor]:
        with self._lock:
            cursor = self._conn.cursor()
            try:
                cursor.execute(begin)
            except sqlite3.OperationalError as error:  # locked past the busy timeout, disk gone
                raise StorageUnavailable(f"the ledger {self.path.name} is not writable: {error}") from None
            try:
                yield cursor
            except BaseException:
                self._conn.rollback()
                raise
            else:
                try:
                    self._conn.commit()
                except sqlite3.OperationalError as error:
                    self._conn.rollback()
                    raise StorageUnavailable(
                        f"the ledger {self.path.name} could not commit: {error}"
                    ) from None
            finally:
                cursor.close()

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[Cursor]:
        with self.transaction() as cursor:  # BEGIN IMMEDIATE holds the database's one write lock
            yield cursor

    def close(self) -> None:
        with self._lock:
            self._conn.close()

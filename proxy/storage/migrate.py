"""Versioned schema migrations: `sql/NNN_name.sql`, applied in the order of their numbers (unique,
not necessarily consecutive), once each, at start.

Each file holds portable SQL statements separated by `;` at the end of a line. All missing ones run
in one transaction under an exclusive lock, so proxies starting together on one database migrate
it once, and a failed migration leaves the schema as it was. A database migrated by a newer proxy
than this one is refused rather than misread.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from importlib import resources

from proxy.errors import ConfigError
from proxy.storage.base import Database

_FILE = re.compile(r"(\d{3})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def migrations() -> list[Migration]:
    found = []
    for entry in resources.files("proxy.storage").joinpath("sql").iterdir():
        match = _FILE.fullmatch(entry.name)
        if match is None:
            continue
        text = "\n".join(
            line for line in entry.read_text(encoding="utf-8").splitlines() if not line.startswith("--")
        )
        statements = tuple(s.strip() for s in re.split(r";\s*$", text, flags=re.MULTILINE) if s.strip())
        found.append(Migration(int(match.group(1)), match.group(2), statements))
    found.sort(key=lambda m: m.version)
    numbers = [m.version for m in found]
    if len(set(numbers)) != len(numbers):
        raise ConfigError(f"two migrations share a number: {numbers}")
    return found


def migrate(database: Database, *, until: int | None = None) -> list[int]:
    """Applies every migration not applied yet (up to `until`, for tests of upgrades); returns
    the versions it applied."""
    known = [m for m in migrations() if until is None or m.version <= until]
    with database.exclusive("modelfolio-schema-migrations") as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        cur.execute("SELECT version FROM schema_migrations")
        applied = {int(row[0]) for row in cur.fetchall()}
        unknown = applied - {m.version for m in migrations()}
        if unknown:
            raise ConfigError(
                f"the ledger at {database.where} has schema version {max(unknown)}, which this proxy "
                "does not know: it was migrated by a newer proxy; run that, or restore a matching backup"
            )
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
        done = []
        for migration in known:
            if migration.version in applied:
                continue
            for statement in migration.statements:
                cur.execute(statement)
            cur.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, now),
            )
            done.append(migration.version)
    return done


def schema_version(database: Database) -> int:
    with database.transaction() as cur:
        cur.execute("SELECT MAX(version) FROM schema_migrations")
        row = cur.fetchone()
    return int(row[0] or 0)

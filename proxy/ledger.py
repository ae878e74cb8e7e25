"""The edge's own records: who created which prediction and uploaded which file, and the API keys.
What was billed lives in the billing package (proxy/billing/store.py), in the same database.

Blocking methods; the app calls them from worker threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.storage import Database


@dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    key_hash: str
    customer: str
    created_at: str
    revoked_at: str | None
    expires_at: str | None = None  # a rotated key's end of grace


class Ledger:
    def __init__(self, database: Database) -> None:
        self.database = database

    def ping(self) -> bool:
        return self.database.ping()

    # --- predictions: who created what --------------------------------------------------------

    def record_prediction(
        self, prediction_id: str, caller: str, model: str, at: str, key_id: str | None = None
    ) -> None:
        """Who created a prediction (and with which key): written once (the caller never
        changes); a model learnt later (a create by version) fills in one recorded without it."""
        with self.database.transaction() as cur:
            cur.execute(
                "INSERT INTO predictions (id, caller, model, created_at, key_id) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET model = excluded.model "
                "WHERE predictions.model = '' AND predictions.caller = excluded.caller",
                (prediction_id, caller, model, at, key_id),
            )

    def creator_of(self, prediction_id: str) -> str | None:
        with self.database.read() as cur:
            cur.execute("SELECT caller FROM predictions WHERE id = ?", (prediction_id,))
            row = cur.fetchone()
        return row[0] if row else None

    def owner_of(self, prediction_id: str) -> tuple[str, str | None] | None:
        """(creator, the record if the result cache answered it) in one query: what every poll asks."""
        with self.database.read() as cur:
            cur.execute(
                "SELECT p.caller, c.record FROM predictions p LEFT JOIN cached_predictions c ON c.id = p.id "
                "WHERE p.id = ?",
                (prediction_id,),
            )
            row = cur.fetchone()
        return (row[0], row[1]) if row else None

    def count_predictions_since(self, caller: str, since: str) -> int:
        with self.database.read() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM predictions WHERE caller = ? AND created_at >= ?", (caller, since)
            )
            return int(cur.fetchone()[0])

    # --- uploads ------------------------------------------------------------------------------

    def record_upload(self, file_id: str, caller: str, at: str, sha256: str | None = None) -> None:
        with self.database.transaction() as cur:
            cur.execute(
                "INSERT INTO uploads (id, caller, created_at, sha256) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO NOTHING",
                (file_id, caller, at, sha256),
            )

    def uploader_of(self, file_id: str) -> str | None:
        with self.database.read() as cur:
            cur.execute("SELECT caller FROM uploads WHERE id = ?", (file_id,))
            row = cur.fetchone()
        return row[0] if row else None

    def upload_hash(self, file_id: str) -> str | None:
        """The sha256 of an upload's bytes, as the model server reported it."""
        with self.database.read() as cur:
            cur.execute("SELECT sha256 FROM uploads WHERE id = ?", (file_id,))
            row = cur.fetchone()
        return row[0] if row else None

    # --- predictions the result cache answered (the model server never saw them) ---------------

    def save_cached_prediction(self, prediction_id: str, caller: str, record: str, at: str) -> None:
        with self.database.transaction() as cur:
            cur.execute(
                "INSERT INTO cached_predictions (id, caller, record, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO NOTHING",
                (prediction_id, caller, record, at),
            )

    def cached_prediction(self, prediction_id: str) -> tuple[str, str] | None:
        """(caller, record as JSON) of a prediction the cache answered."""
        with self.database.read() as cur:
            cur.execute("SELECT caller, record FROM cached_predictions WHERE id = ?", (prediction_id,))
            row = cur.fetchone()
        return (row[0], row[1]) if row else None

    # --- API keys -----------------------------------------------------------------------------

    def add_api_key(self, key_id: str, key_hash: str, customer: str, at: str) -> None:
        with self.database.transaction() as cur:
            cur.execute(
                "INSERT INTO api_keys (id, key_hash, customer, created_at) VALUES (?, ?, ?, ?)",
                (key_id, key_hash, customer, at),
            )

    def api_key(self, key_id: str) -> ApiKeyRecord | None:
        with self.database.read() as cur:
            cur.execute(
                "SELECT id, key_hash, customer, created_at, revoked_at, expires_at FROM api_keys "
                "WHERE id = ?",
                (key_id,),
            )
            row = cur.fetchone()
        return ApiKeyRecord(*row) if row else None

    def api_keys(self) -> list[ApiKeyRecord]:
        with self.database.read() as cur:
            cur.execute(
                "SELECT id, key_hash, customer, created_at, revoked_at, expires_at FROM api_keys "
                "ORDER BY created_at, id"
            )
            return [ApiKeyRecord(*row) for row in cur.fetchall()]

    def rotate_api_key(self, old_id: str, new_id: str, key_hash: str, at: str, expires_at: str) -> bool:
        """A new key for the old one's customer; the old one works until `expires_at` (an
        earlier end it already had stands). False if the old key is no longer live."""
        with self.database.transaction() as cur:
            cur.execute(
                "UPDATE api_keys SET expires_at = CASE WHEN expires_at IS NOT NULL AND expires_at < ? "
                "THEN expires_at ELSE ? END "
                "WHERE id = ? AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)",
                (expires_at, expires_at, old_id, at),
            )
            if cur.rowcount != 1:
                return False
            cur.execute(
                "INSERT INTO api_keys (id, key_hash, customer, created_at) "
                "SELECT ?, ?, customer, ? FROM api_keys WHERE id = ?",
                (new_id, key_hash, at, old_id),
            )
            return True

    def revoke_api_key(self, key_id: str, at: str) -> bool:
        with self.database.transaction() as cur:
            cur.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (at, key_id)
            )
            return cur.rowcount == 1

    # --- listing: pages of a caller's predictions and uploads, run counts -------------------
    # One block (tables: storage/sql/005_listing.sql). A page is keyed by (created_at, id), newest
    # first; `newer=True` walks the other way, for a page's `previous` link.

    def remember_prediction(self, prediction_id: str, record: str, terminal: bool, at: str) -> None:
        """Keeps the latest record of a prediction; a finished one is never replaced by a stale
        answer that raced it."""
        with self.database.transaction() as cur:
            cur.execute(
                "INSERT INTO prediction_records (id, record, terminal, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET record = excluded.record, terminal = excluded.terminal, "
                "updated_at = excluded.updated_at WHERE prediction_records.terminal = 0",
                (prediction_id, record, int(terminal), at),
            )

    def prediction_record(self, prediction_id: str) -> str | None:
        with self.database.read() as cur:
            cur.execute("SELECT record FROM prediction_records WHERE id = ?", (prediction_id,))
            row = cur.fetchone()
        return row[0] if row else None

    def predictions_page(
        self, caller: str, after: PageKey | None, limit: int, *, newer: bool = False
    ) -> Page:
        """(id, model, created_at, record or None) of `caller`'s predictions, newest first."""
        return self._page(
            "SELECT p.id, p.model, p.created_at, r.record FROM predictions p "
            "LEFT JOIN prediction_records r ON r.id = p.id WHERE p.caller = ?",
            "p.",
            (caller,),
            after,
            limit,
            newer,
        )

    def run_counts(self) -> dict[str, int]:
        """Predictions created per model ('owner/name'), by every caller."""
        with self.database.read() as cur:
            cur.execute("SELECT model, COUNT(*) FROM predictions GROUP BY model")
            rows = cur.fetchall()
        return {model: int(count) for model, count in rows}

    def remember_upload(self, file_id: str, record: str, expires_at: str) -> None:
        with self.database.transaction() as cur:
            cur.execute(
                "INSERT INTO upload_records (id, record, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET record = excluded.record, expires_at = excluded.expires_at",
                (file_id, record, expires_at),
            )

    def forget_upload(self, file_id: str) -> None:
        with self.database.transaction() as cur:
            cur.execute("DELETE FROM upload_records WHERE id = ?", (file_id,))

    def uploads_page(
        self, caller: str, now: str, after: PageKey | None, limit: int, *, newer: bool = False
    ) -> Page:
        """(id, created_at, file object) of `caller`'s uploads that have not expired, newest first."""
        return self._page(
            "SELECT u.id, u.created_at, r.record FROM uploads u "
            "JOIN upload_records r ON r.id = u.id WHERE u.caller = ? AND r.expires_at > ?",
            "u.",
            (caller, now),
            after,
            limit,
            newer,
        )

    def _page(
        self,
        select: str,
        alias: str,
        params: tuple[str, ...],
        after: PageKey | None,
        limit: int,
        newer: bool,
    ) -> Page:
        created, key = f"{alias}created_at", f"{alias}id"
        beyond = f"({created} {{op}} ? OR ({created} = ? AND {key} {{op}} ?))"
        order = f"ORDER BY {created} {{way}}, {key} {{way}}"
        forward, backward = (">", "ASC"), ("<", "DESC")
        op, way = forward if newer else backward
        where, bound = "", tuple[str, ...]()
        if after is not None:
            where, bound = " AND " + beyond.format(op=op), (after[0], after[0], after[1])
        with self.database.read() as cur:
            cur.execute(f"{select}{where} {order.format(way=way)} LIMIT ?", (*params, *bound, limit + 1))
            rows = [tuple(row) for row in cur.fetchall()]
            more_this_way = len(rows) > limit
            rows = rows[:limit]
            more_that_way = False
            if rows:
                # Anything past the page's other end: the first row's key, the opposite way.
                edge = rows[0]
                op_back, way_back = backward if newer else forward
                cur.execute(
                    f"{select} AND {beyond.format(op=op_back)} {order.format(way=way_back)} LIMIT 1",
                    (*params, edge[_CREATED[alias]], edge[_CREATED[alias]], edge[0]),
                )
                more_that_way = cur.fetchone() is not None
        if newer:
            rows.reverse()
            return Page(rows, has_older=more_that_way, has_newer=more_this_way)
        return Page(rows, has_older=more_this_way, has_newer=more_that_way)


PageKey = tuple[str, str]  # (created_at, id)
_CREATED = {"p.": 2, "u.": 1}  # where created_at sits in each page's rows


@dataclass(frozen=True)
class Page:
    rows: list[tuple[Any, ...]]
    has_older: bool
    has_newer: bool

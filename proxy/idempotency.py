"""`Idempotency-Key` on creates, as Stripe has it: a retry of a create (the answer was lost to a
dropped connection or a proxy that died) gets the prediction the first try made, never a second
one, and so never a second bill.

The key is the caller's: (caller, key) is unique in the ledger, shared by every proxy process and
kept at least 24 hours. The first request with a key writes, before anything is forwarded, the
hash of its body and a fresh prediction id; the model server is then asked to create exactly that
prediction (`PUT /v1/predictions/{id}`, which it does once). A retry finds the row and asks again
for the same id: the model server answers with the existing prediction, or creates it if the first
try never reached it. The same key with another body is refused with 422.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from proxy.errors import BadRequest, Unprocessable
from proxy.storage import Database

KEPT = datetime.timedelta(hours=48)  # Stripe keeps keys "at least 24 hours"; so do we, twice over
_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, no spaces
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def new_prediction_id() -> str:
    """26 random lowercase letters and digits: the shape of the model server's own ids."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(26))


def check_key(raw: str) -> str:
    if not _KEY.fullmatch(raw):
        raise BadRequest("Idempotency-Key must be 1 to 255 printable ASCII characters without spaces")
    return raw


def request_hash(body: Any, path: str) -> str:
    """The request as its meaning, not its bytes: JSON whitespace and key order do not matter."""
    canonical = json.dumps({"path": path, "body": body}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Claim:
    prediction_id: str
    replay: bool  # a retry: the key was used before, with the same request


class Idempotency:
    def __init__(self, database: Database) -> None:
        self.database = database

    def claim(self, caller: str, key: str, digest: str, now: datetime.datetime) -> Claim:
        """Blocking. Binds `key` to this request and a new prediction id, or finds the binding a
        previous try made; 422 if that try sent another request."""
        at = now.isoformat(timespec="microseconds")
        with self.database.transaction() as cur:
            cur.execute(
                "DELETE FROM idempotency_keys WHERE created_at < ?",
                ((now - KEPT).isoformat(timespec="microseconds"),),
            )
            cur.execute(
                "INSERT INTO idempotency_keys (caller, key, request_hash, prediction_id, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (caller, key) DO NOTHING",
                (caller, key, digest, new_prediction_id(), at),
            )
            fresh = cur.rowcount == 1
            cur.execute(
                "SELECT request_hash, prediction_id FROM idempotency_keys WHERE caller = ? AND key = ?",
                (caller, key),
            )
            stored_hash, prediction_id = cur.fetchone()
        if stored_hash != digest:
            raise Unprocessable(
                "this Idempotency-Key was used with a different request; use a new key for a new prediction"
            )
        return Claim(prediction_id, replay=not fresh)

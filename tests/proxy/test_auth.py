"""API keys and anonymous callers."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from proxy.auth import (
    AddressHasher,
    check_customer_id,
    client_address,
    customer_for_key,
    hash_key,
    new_api_key,
    presented_key,
)
from proxy.errors import BadRequest, CommandError, Unauthorized
from proxy.ledger import Ledger
from proxy.storage import open_database


def everything_stored(path: Path) -> str:
    """Every value in every table, read through SQLite: rows still in the write-ahead log count."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(str(row) for table in tables for row in db.execute(f"SELECT * FROM {table}"))


def test_what_is_stored_is_read_with_the_rows_still_in_the_write_ahead_log(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'l.sqlite3'}")
    ledger = Ledger(database)
    try:
        ledger.add_api_key("k1", "mf_planted_plain_text_key", "cus_A", "2025-06-01T00:00:00+00:00")
        assert (tmp_path / "l.sqlite3-wal").stat().st_size > 0  # the row is in the log, not the file
        assert "mf_planted_plain_text_key" in everything_stored(tmp_path / "l.sqlite3")
    finally:
        database.close()


def test_a_new_key_is_random_prefixed_and_stored_only_as_its_hash(tmp_path: Path) -> None:
    key_id, key = new_api_key()
    other_id, other = new_api_key()
    assert key.startswith(f"mf_{key_id}_") and key != other and key_id != other_id
    database = open_database(f"sqlite:///{tmp_path / 'l.sqlite3'}")
    ledger = Ledger(database)
    try:
        ledger.add_api_key(key_id, hash_key(key), "cus_A", "2025-06-01T00:00:00+00:00")
        assert key not in everything_stored(tmp_path / "l.sqlite3") and hash_key(key) in everything_stored(
            tmp_path / "l.sqlite3"
        )
        caller = customer_for_key(ledger, key)
        assert (caller.kind, caller.customer, caller.id) == ("customer", "cus_A", "customer:cus_A")
        with pytest.raises(Unauthorized, match="not valid"):
            customer_for_key(ledger, key[:-1] + ("A" if key[-1] != "A" else "B"))
        with pytest.raises(Unauthorized, match="not valid"):
            customer_for_key(ledger, "sk_test_fake")  # a Stripe key is no API key
    finally:
        database.close()


@pytest.mark.parametrize(
    ("header", "key"),
    [(None, None), ("Bearer mf_abc", "mf_abc"), ("Token mf_abc", "mf_abc"), ("bearer  mf_abc ", "mf_abc")],
)
def test_the_key_is_read_from_bearer_or_token(header: str | None, key: str | None) -> None:
    assert presented_key(header) == key


@pytest.mark.parametrize("header", ["Basic dXNlcg==", "Bearer", "Bearer   ", "mf_abc", ""])
def test_an_authorization_header_without_a_key_is_refused(header: str) -> None:
    with pytest.raises(Unauthorized):
        presented_key(header)


def test_customer_ids_must_look_like_stripes() -> None:
    assert check_customer_id("cus_N1x2") == "cus_N1x2"
    with pytest.raises(CommandError, match="not a Stripe customer id"):
        check_customer_id("alice")


def test_anonymous_addresses_are_hashed_and_ipv6_counts_by_its_64() -> None:
    hasher = AddressHasher("token-one")
    one = hasher.caller("203.0.113.7")
    assert one.kind == "anonymous" and "203.0.113.7" not in one.id
    assert hasher.caller("203.0.113.7") == one
    assert hasher.caller("203.0.113.8") != one
    assert hasher.caller("::ffff:203.0.113.7") == one
    assert hasher.caller("2001:db8:1:2::1") == hasher.caller("2001:db8:1:2:ffff::9")
    assert hasher.caller("2001:db8:1:3::1") != hasher.caller("2001:db8:1:2::1")
    assert AddressHasher("token-two").caller("203.0.113.7") != one


def test_x_forwarded_for_is_used_only_when_trusted_and_then_its_rightmost_hop() -> None:
    assert client_address("10.0.0.1", "1.1.1.1, 203.0.113.7", trust_forwarded=False) == "10.0.0.1"
    assert client_address("10.0.0.1", "1.1.1.1, 203.0.113.7", trust_forwarded=True) == "203.0.113.7"
    assert client_address("10.0.0.1", None, trust_forwarded=True) == "10.0.0.1"
    with pytest.raises(BadRequest):
        client_address("10.0.0.1", "1.1.1.1, nonsense", trust_forwarded=True)

"""Who is calling: a customer holding an API key, or an anonymous visitor on the demo quota.

An API key reads `mf_<key id>_<secret>`. Only its SHA-256 is stored; the key id finds the row
and the hashes are compared in constant time. Keys carry 256 random bits, so an unsalted hash
is enough. Anonymous visitors are known by an HMAC of their address (IPv6 by its /64), keyed by
a value derived from the inference token, so the ledger never holds an address that a table
of all IPv4 addresses could reverse.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from dataclasses import dataclass
from typing import Literal

from proxy.errors import BadRequest, CommandError, Unauthorized
from proxy.ledger import Ledger

KEY_PREFIX = "mf_"
_KEY = re.compile(r"mf_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_CUSTOMER = re.compile(r"cus_[A-Za-z0-9]+")


@dataclass(frozen=True)
class Caller:
    kind: Literal["customer", "anonymous"]
    id: str  # "customer:cus_..." or "address:<hmac>": owner of predictions and usage rows
    customer: str | None = None  # Stripe customer id, for customers only
    key_id: str | None = None  # the API key it presented, for customers only

    @property
    def billed_to(self) -> Literal["customer", "demo"]:
        return "customer" if self.kind == "customer" else "demo"


def caller_from_id(caller_id: str) -> Caller:
    """The caller a stored id (a ledger's `caller` column) stands for."""
    if caller_id.startswith("customer:"):
        return Caller("customer", caller_id, caller_id.removeprefix("customer:"))
    return Caller("anonymous", caller_id)


def new_key_id() -> str:
    return secrets.token_hex(6)


def new_api_key(key_id: str | None = None) -> tuple[str, str]:
    """A fresh (key id, key); the key is shown once and stored only as its hash."""
    key_id = key_id or new_key_id()
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_customer_id(customer: str) -> str:
    if not _CUSTOMER.fullmatch(customer):
        raise CommandError(f"{customer!r} is not a Stripe customer id (cus_...)")
    return customer


def presented_key(authorization: str | None) -> str | None:
    """The key in `Authorization: Bearer <key>` or Replicate's older `Token <key>`;
    None when there is no header at all (an anonymous visitor)."""
    if authorization is None:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() not in ("bearer", "token") or not value.strip():
        raise Unauthorized("send your API key as 'Authorization: Bearer <key>'")
    return value.strip()


def customer_for_key(ledger: Ledger, key: str, now: str | None = None) -> Caller:
    """Blocking (reads the ledger). Unknown, revoked and expired keys are refused, never
    anonymous; `now` (ISO, UTC) is when a rotated key's grace period is judged."""
    match = _KEY.fullmatch(key)
    record = ledger.api_key(match.group(1)) if match else None
    stored = record.key_hash if record else hash_key("")
    if not hmac.compare_digest(stored, hash_key(key)) or record is None:
        raise Unauthorized("this API key is not valid")
    if record.revoked_at is not None:
        raise Unauthorized("this API key has been revoked")
    if record.expires_at is not None and now is not None and record.expires_at <= now:
        raise Unauthorized("this API key was replaced by a new one and its grace period is over")
    return Caller(
        kind="customer", id=f"customer:{record.customer}", customer=record.customer, key_id=record.id
    )


class AddressHasher:
    def __init__(self, inference_token: str) -> None:
        self._key = hmac.new(inference_token.encode(), b"modelfolio demo address", "sha256").digest()

    def caller(self, address: str) -> Caller:
        digest = hmac.new(self._key, _bucket(address).encode(), "sha256").hexdigest()
        return Caller(kind="anonymous", id=f"address:{digest[:32]}")


def _bucket(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        # One home or phone gets a whole /64; counting single addresses would make the demo
        # quota free to reset.
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def client_address(peer: str | None, forwarded_for: str | None, trust_forwarded: bool) -> str:
    """The caller's address. Behind a trusted proxy, the rightmost X-Forwarded-For entry is the
    one that proxy saw; the entries left of it are whatever the client chose to send."""
    if trust_forwarded and forwarded_for:
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        if hops:
            try:
                return str(ipaddress.ip_address(hops[-1]))
            except ValueError:
                raise BadRequest("X-Forwarded-For does not end with an IP address") from None
    return peer or "unknown"

"""A new key for a customer who lost theirs (closed the welcome page, lost the laptop).

Who they are is proved by the owner, through Stripe: the customer writes to the owner from the
email address their Stripe customer has; the owner runs `python -m proxy keys recover --customer
cus_...`, which checks the subscription at Stripe and prints a one-time link, and sends the link
to that address. (No mail leaves the proxy: there is no mail server to trust with it.) Opening
the link shows a button; pressing it revokes every key the customer has (the lost one may be in
someone else's hands) and shows a new one, once. The link holds 256 random bits, only its hash
is stored, it expires (24 hours by default) and works once.

Why not Stripe's customer portal: it proves the customer to Stripe by email, but sends them back
to us with nothing we could check, so it cannot be the proof here.
"""

from __future__ import annotations

import datetime
import html
import re
import secrets
from urllib.parse import parse_qs

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from proxy.auth import hash_key, new_api_key
from proxy.billing import billing_of
from proxy.forward import limited
from proxy.logs import log_event
from proxy.site import page
from proxy.storage import Database

_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
DEFAULT_VALID = datetime.timedelta(hours=24)


class RecoveryStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    def create_link(self, customer: str, at: datetime.datetime, valid: datetime.timedelta) -> str:
        token = secrets.token_urlsafe(32)
        with self.database.transaction() as cur:
            cur.execute(
                "INSERT INTO key_recovery_links (token_hash, customer, created_at, expires_at) "
                "VALUES (?, ?, ?, ?)",
                (hash_key(token), customer, _iso(at), _iso(at + valid)),
            )
        return token

    def usable(self, token: str, now: str) -> bool:
        with self.database.transaction() as cur:
            cur.execute(
                "SELECT 1 FROM key_recovery_links "
                "WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?",
                (hash_key(token), now),
            )
            return cur.fetchone() is not None

    def redeem(self, token: str, key_id: str, key_hash: str, now: str) -> tuple[str, int] | None:
        """Uses the link once: revokes the customer's keys and adds the new one, in one
        transaction. Returns (customer, keys revoked), or None for a used, expired or unknown link."""
        with self.database.transaction() as cur:
            cur.execute(
                "UPDATE key_recovery_links SET used_at = ?, key_id = ? "
                "WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?",
                (now, key_id, hash_key(token), now),
            )
            if cur.rowcount != 1:
                return None
            cur.execute("SELECT customer FROM key_recovery_links WHERE token_hash = ?", (hash_key(token),))
            (customer,) = cur.fetchone()
            cur.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE customer = ? AND revoked_at IS NULL",
                (now, customer),
            )
            revoked = cur.rowcount
            cur.execute(
                "INSERT INTO api_keys (id, key_hash, customer, created_at) VALUES (?, ?, ?, ?)",
                (key_id, key_hash, customer, now),
            )
        return str(customer), revoked


async def show(request: Request) -> Response:
    billing = billing_of(request)
    token = request.query_params.get("token", "")
    if not _TOKEN.fullmatch(token):
        return _bad_link()
    if not await to_thread.run_sync(RecoveryStore(billing.ledger.database).usable, token, billing.now()):
        return _spent_link()
    return _private(
        page(
            200,
            "Recover your API key",
            "This link gives you a new API key, shown once. Every key you have now stops working at "
            "once, so anyone holding the lost one is shut out.</p>"
            '<form method="post" action="/billing/recover">'
            f'<input type="hidden" name="token" value="{html.escape(token)}">'
            '<button type="submit">Show my new key</button></form><p>',
        )
    )


async def redeem(request: Request) -> Response:
    billing = billing_of(request)
    await billing.admit(request)  # the edge's rate limits hold here too
    raw = b"".join([chunk async for chunk in limited(request.stream(), 4096)])
    token = (parse_qs(raw.decode("utf-8", "replace")).get("token") or [""])[0]
    if not _TOKEN.fullmatch(token):
        return _bad_link()
    key_id, key = new_api_key()
    redeemed = await to_thread.run_sync(
        RecoveryStore(billing.ledger.database).redeem, token, key_id, hash_key(key), billing.now()
    )
    if redeemed is None:
        return _spent_link()
    customer, revoked = redeemed
    log_event("api_key_issued", key_id=key_id, via="recovery", customer=customer, keys_revoked=revoked)
    return _private(
        page(
            200,
            "Your new API key",
            "This is the only time it is shown; copy it now and keep it secret. Your old keys no "
            f'longer work.</p><pre><code data-testid="api-key">{html.escape(key)}</code></pre><p>',
        )
    )


def _bad_link() -> HTMLResponse:
    return _private(page(400, "Not a recovery link", "This address needs the whole link the owner sent you."))


def _spent_link() -> HTMLResponse:
    return _private(
        page(
            410,
            "This link no longer works",
            "A recovery link works once and for a day. Ask the owner of this portfolio for a new one.",
        )
    )


def _private(response: HTMLResponse) -> HTMLResponse:
    # The token travels in the address: no cache keeps the page, no Referer carries it on.
    response.headers["cache-control"] = "no-store"
    response.headers["referrer-policy"] = "no-referrer"
    return response


def _iso(moment: datetime.datetime) -> str:
    return moment.isoformat(timespec="microseconds")


ROUTES = [
    Route("/billing/recover", show, methods=["GET"]),
    Route("/billing/recover", redeem, methods=["POST"]),
]

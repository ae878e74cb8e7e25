"""TEST SUPPORT ONLY, part of devtools/teststripe/server.py: Stripe Connect for a platform that
pays Express accounts with separate charges and transfers. Accounts, Account Links and the
hosted onboarding page they lead to, transfers (with `source_transaction`, `transfer_group`) and
transfer reversals, and the Connect event `account.updated`. Each behaviour names the Stripe page
it follows.

Simplifications, on purpose: onboarding is one "Submit (test)" button; no balance is kept per
connected account and nothing is paid out of it; an account's requirements are a fixed list.
"""

from __future__ import annotations

import html
import secrets
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from devtools.teststripe.checkout import deliver_pending, queue_event

if TYPE_CHECKING:
    from devtools.teststripe.server import State

LINK_LIFETIME_S = 300  # https://docs.stripe.com/api/account_links/object: "expires_at", minutes
REQUIREMENTS = ["external_account", "individual.verification.document", "tos_acceptance.date"]
TRANSFERS_CAPABILITY = (
    "Your destination account needs to have at least one of the following capabilities enabled: "
    "transfers, crypto_transfers, legacy_payments"
)


def _error(status: int, message: str, param: str | None = None, code: str | None = None) -> Exception:
    from devtools.teststripe.server import StripeError

    code = code or ("resource_missing" if status == 404 else None)
    return StripeError(status, message, code=code, param=param)


def _positive(p: dict[str, Any], name: str) -> int:
    from devtools.teststripe.server import _integer

    value = _integer(p, name)
    if value <= 0:
        raise _error(400, f"Invalid {name}: must be a positive integer.", name, "parameter_invalid_integer")
    return value


def _url(p: dict[str, Any], name: str) -> str:
    value = p.get(name) or ""
    if not value.startswith(("http://", "https://")):
        raise _error(400, f"Missing required param: {name}." if not value else f"Invalid URL: {name}", name)
    return str(value)


# --- accounts -----------------------------------------------------------------------------------


def create_account(s: State, p: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    # https://docs.stripe.com/api/accounts/create: an Express account starts with nothing
    # enabled until its holder finishes onboarding (https://docs.stripe.com/connect/express-accounts).
    kind = p.get("type")
    if kind not in ("express", "standard", "custom"):
        raise _error(400, "Missing required param: type." if not kind else f"Invalid type: {kind}", "type")
    country = p.get("country", "US")
    if len(country) != 2:
        raise _error(400, f"Invalid country: {country}", "country")
    requested = {
        name for name, value in (p.get("capabilities") or {}).items() if value.get("requested") == "true"
    }
    account = {
        "id": s.new_id("acct"),
        "object": "account",
        "type": kind,
        "email": p.get("email"),
        "country": country,
        "default_currency": "usd",
        "charges_enabled": False,
        "payouts_enabled": False,
        "details_submitted": False,
        "capabilities": dict.fromkeys(sorted(requested), "inactive"),
        "requirements": {"currently_due": list(REQUIREMENTS), "disabled_reason": "requirements.past_due"},
        "metadata": p.get("metadata", {}),
        "created": int(s.clock()),
        "livemode": False,
    }
    s.objects[account["id"]] = account
    return account


def list_accounts(s: State, p: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    from devtools.teststripe.server import _listing

    return _listing(list(reversed(s.of("account"))), p, "/v1/accounts")  # newest first


def create_account_link(s: State, p: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    # https://docs.stripe.com/api/account_links/create: single use, expires within minutes.
    account = s.get("account", p.get("account") or "", "account")
    kind = p.get("type")
    if kind not in ("account_onboarding", "account_update"):
        raise _error(400, "Missing required param: type." if not kind else f"Invalid type: {kind}", "type")
    if kind == "account_update" and account["type"] == "express":
        raise _error(
            400, "You cannot create `account_update` type Account Links for Express accounts.", "type"
        )
    token = secrets.token_urlsafe(18)
    now = int(s.clock())
    s.links[token] = {
        "account": account["id"],
        "return_url": _url(p, "return_url"),
        "refresh_url": _url(p, "refresh_url"),
        "expires_at": now + LINK_LIFETIME_S,
        "state": "new",
    }
    return {
        "object": "account_link",
        "created": now,
        "expires_at": now + LINK_LIFETIME_S,
        "url": f"{s.webhooks.base_url}/setup/e/{account['id']}/{token}",
    }


def finish_onboarding(s: State, account_id: str) -> dict[str, Any]:
    """What the holder's "Submit" does: requirements met, transfers and payouts on."""
    account = s.get("account", account_id)
    account.update(charges_enabled=True, payouts_enabled=True, details_submitted=True)
    account["capabilities"] = dict.fromkeys(account["capabilities"] or {"transfers": ""}, "active")
    account["requirements"] = {"currently_due": [], "disabled_reason": None}
    account_event(s, account, {"payouts_enabled": False, "details_submitted": False})
    return account


def restrict(s: State, account_id: str) -> dict[str, Any]:
    """Stripe needs more from the holder (a document past due): payouts stop until they give it."""
    account = s.get("account", account_id)
    account.update(payouts_enabled=False)
    account["requirements"] = {"currently_due": ["individual.verification.document"], "disabled_reason": None}
    account_event(s, account, {"payouts_enabled": True})
    return account


def account_event(s: State, account: dict[str, Any], previous: dict[str, Any]) -> None:
    # https://docs.stripe.com/connect/webhooks: events on a connected account carry `account`
    # and go to Connect endpoints (created with connect=true), not to the platform's own.
    event = queue_event(s, "account.updated", account)
    event["account"] = account["id"]
    event["data"]["previous_attributes"] = previous


# --- transfers ----------------------------------------------------------------------------------


def create_transfer(s: State, p: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    # https://docs.stripe.com/api/transfers/create and
    # https://docs.stripe.com/connect/separate-charges-and-transfers
    amount = _positive(p, "amount")
    currency = p.get("currency")
    if not currency:
        raise _error(400, "Missing required param: currency.", "currency")
    destination = s.objects.get(p.get("destination") or "")
    if destination is None or destination["object"] != "account":
        raise _error(400, f"No such destination: '{p.get('destination')}'", "destination", "resource_missing")
    if destination["capabilities"].get("transfers") != "active":
        raise _error(400, TRANSFERS_CAPABILITY, "destination", "insufficient_capabilities_for_transfer")
    source = p.get("source_transaction")
    if source:
        charge = s.get("charge", source, "source_transaction")
        if charge["status"] != "succeeded" or charge["currency"] != currency:
            raise _error(
                400,
                f"The source transaction {source} cannot fund a {currency} transfer.",
                "source_transaction",
            )
        drawn = sum(t["amount"] for t in s.of("transfer") if t["source_transaction"] == source)
        if drawn + amount > charge["amount"]:
            raise _error(
                400,
                f"The transfer amount exceeds what remains of source transaction {source} "
                f"({charge['amount'] - drawn} of {charge['amount']}).",
                "amount",
                "balance_insufficient",
            )
    elif amount > available_balance(s):
        raise _error(
            400, "You have insufficient funds in your Stripe account.", "amount", "balance_insufficient"
        )
    transfer_id = s.new_id("tr")
    transfer = {
        "id": transfer_id,
        "object": "transfer",
        "amount": amount,
        "amount_reversed": 0,
        "currency": currency,
        "description": p.get("description"),
        "destination": destination["id"],
        "destination_payment": s.new_id("py"),
        "balance_transaction": s.new_id("txn"),
        "metadata": p.get("metadata", {}),
        "reversals": {
            "object": "list",
            "data": [],
            "has_more": False,
            "total_count": 0,
            "url": f"/v1/transfers/{transfer_id}/reversals",
        },
        "reversed": False,
        "source_transaction": source or None,
        "source_type": "card",
        "transfer_group": p.get("transfer_group"),
        "created": int(s.clock()),
        "livemode": False,
    }
    s.objects[transfer_id] = transfer
    queue_event(s, "transfer.created", transfer)
    return transfer


def available_balance(s: State) -> int:
    """The platform's balance, all of it taken as available (no payout schedule here)."""
    charged = sum(c["amount"] - c["amount_refunded"] for c in s.of("charge") if c["status"] == "succeeded")
    return charged - sum(t["amount"] - t["amount_reversed"] for t in s.of("transfer"))


def list_transfers(s: State, p: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    # https://docs.stripe.com/api/transfers/list: newest first; destination, transfer_group
    from devtools.teststripe.server import _listing

    transfers = [
        t
        for t in reversed(s.of("transfer"))
        if p.get("destination") in (None, t["destination"])
        and p.get("transfer_group") in (None, t["transfer_group"])
    ]
    return _listing(transfers, p, "/v1/transfers")


def create_reversal(s: State, p: dict[str, Any], path: dict[str, str]) -> dict[str, Any]:
    # https://docs.stripe.com/api/transfer_reversals/create: the whole remainder by default
    transfer = s.get("transfer", path["id"])
    left = transfer["amount"] - transfer["amount_reversed"]
    amount = _positive(p, "amount") if "amount" in p else left
    if amount > left:
        raise _error(
            400, f"Amount ({amount}) is greater than the amount that can be reversed ({left}).", "amount"
        )
    reversal = {
        "id": s.new_id("trr"),
        "object": "transfer_reversal",
        "amount": amount,
        "currency": transfer["currency"],
        "transfer": transfer["id"],
        "destination_payment_refund": s.new_id("pyr"),
        "metadata": p.get("metadata", {}),
        "created": int(s.clock()),
    }
    s.objects[reversal["id"]] = reversal
    transfer["amount_reversed"] += amount
    transfer["reversed"] = transfer["amount_reversed"] == transfer["amount"]
    transfer["reversals"]["data"].insert(0, reversal)
    transfer["reversals"]["total_count"] += 1
    queue_event(s, "transfer.reversed", transfer)
    return reversal


def list_reversals(s: State, p: dict[str, Any], path: dict[str, str]) -> dict[str, Any]:
    from devtools.teststripe.server import _listing

    transfer = s.get("transfer", path["id"])
    return _listing(list(transfer["reversals"]["data"]), p, f"/v1/transfers/{transfer['id']}/reversals")


ENDPOINTS = [
    ("/v1/accounts", create_account, "POST"),
    ("/v1/accounts", list_accounts, "GET"),
    ("/v1/accounts/{id}", lambda s, p, path: s.get("account", path["id"]), "GET"),
    ("/v1/account_links", create_account_link, "POST"),
    ("/v1/transfers", create_transfer, "POST"),
    ("/v1/transfers", list_transfers, "GET"),
    ("/v1/transfers/{id}", lambda s, p, path: s.get("transfer", path["id"]), "GET"),
    ("/v1/transfers/{id}/reversals", create_reversal, "POST"),
    ("/v1/transfers/{id}/reversals", list_reversals, "GET"),
]


def scripted_routes(s: State) -> list[Route]:
    """The hosted onboarding page an Account Link leads to, and calls no real Stripe has: a test
    plays the author (finishing onboarding) and Stripe's reviewers (restricting payouts)."""

    async def onboard(request: Request) -> JSONResponse:
        account = finish_onboarding(s, request.path_params["id"])
        return JSONResponse({"account": account, "deliveries": await deliver_pending(s)})

    async def restrict_payouts(request: Request) -> JSONResponse:
        account = restrict(s, request.path_params["id"])
        return JSONResponse({"account": account, "deliveries": await deliver_pending(s)})

    async def hosted(request: Request) -> Response:
        link = s.links.get(request.path_params["token"])
        if link is None or link["account"] != request.path_params["id"]:
            return _page(404, "No such link", "<p>This onboarding link does not exist.</p>")
        # https://docs.stripe.com/connect/express-accounts#refresh-url: an expired or visited
        # link sends the holder to refresh_url, where the platform makes a new one.
        expired = s.clock() > link["expires_at"]
        if request.method == "GET":
            if expired or link["state"] != "new":
                return RedirectResponse(link["refresh_url"], status_code=303)
            link["state"] = "opened"
            return _page(200, "Set up payouts", _form(request.url.path, link["account"]))
        if expired or link["state"] != "opened":
            return RedirectResponse(link["refresh_url"], status_code=303)
        link["state"] = "used"
        finish_onboarding(s, link["account"])
        await deliver_pending(s)
        return RedirectResponse(link["return_url"], status_code=303)

    return [
        Route("/setup/e/{id}/{token}", hosted, methods=["GET", "POST"]),
        Route("/_test/accounts/{id}/onboard", onboard, methods=["POST"]),
        Route("/_test/accounts/{id}/restrict", restrict_payouts, methods=["POST"]),
    ]


def _form(action: str, account_id: str) -> str:
    return (
        f"<p>Express account <code>{html.escape(account_id)}</code>: the holder's details, reduced to one "
        "button.</p>"
        f'<form method="post" action="{html.escape(action)}">'
        '<button type="submit">Submit (test)</button></form>'
    )


def _page(status: int, title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{title} · TEST STRIPE</title></head><body>"
        "<p><strong>TEST STRIPE — no real account</strong> (modelfolio test support)</p>"
        f"<h1>{title}</h1>{body}</body></html>",
        status_code=status,
        headers={"cache-control": "no-store"},
    )

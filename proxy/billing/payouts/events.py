"""The Stripe events payouts follow, as entries of the webhook's handler table
(proxy/billing/webhooks.py): `invoice.paid` shares an invoice's predictions out, `charge.refunded`
reverses the same fraction of the transfers from that charge, `account.updated` (a Connect event,
from the connected accounts' endpoint) says whether an author can be paid.

Each is applied in the transaction that records its event id, so a replay changes nothing. What
Stripe must be asked first (an invoice's lines and charge, an account's current state) is asked
before that transaction; if Stripe cannot answer, the webhook answers 503 and Stripe retries.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import stripe
from anyio import to_thread

from proxy.errors import Unavailable
from proxy.logs import log_event

if TYPE_CHECKING:
    from proxy.billing import Billing

INVOICE_PAID = "invoice.paid"
CHARGE_REFUNDED = "charge.refunded"
ACCOUNT_UPDATED = "account.updated"


async def invoice_paid(billing: Billing, event: dict[str, Any], raw: bytes) -> dict[str, Any]:
    payouts = billing.payouts
    invoice = event["data"]["object"]
    if (
        invoice.get("status") != "paid"
        or not isinstance(invoice.get("customer"), str)
        or not payouts.authored
    ):
        applied = await to_thread.run_sync(
            billing.stripe_store.record_stripe_event, event["id"], event["type"], billing.now()
        )
        return {"applied": applied, "reason": "nothing to share: no authored model, or not paid"}
    if payouts.reader is None:
        raise Unavailable("Stripe is not configured here: STRIPE_SECRET_KEY is not set")
    try:
        paid = await payouts.reader.paid(invoice)
    except stripe.StripeError as error:
        raise Unavailable(f"could not read the invoice from Stripe ({type(error).__name__})") from None
    recorded = await to_thread.run_sync(
        payouts.ledger.record_invoice,
        (event["id"], event["type"]),
        paid,
        payouts.config.models,
        billing.now(),
    )
    if recorded is None:
        return {"applied": False, "reason": "already applied"}
    for line in paid.lines:
        ledger_ms = recorded.ledger_ms.get(line.event_name, 0)
        if line.quantity is not None and line.quantity != ledger_ms:
            # Stripe billed other usage than the ledger delivered: the shares follow the ledger.
            log_event(
                "payout_invoice_mismatch",
                level=logging.WARNING,
                invoice=paid.invoice_id,
                event_name=line.event_name,
                stripe_ms=line.quantity,
                ledger_ms=ledger_ms,
            )
    for payout in recorded.payouts:
        log_event(
            "payout_recorded",
            invoice=payout.invoice_id,
            author=payout.author,
            charge=payout.charge_id,
            earned=payout.earned,
            carried_in=payout.carried_in,
            cents=payout.cents,
            carried_out=payout.carried_out,
        )
    payouts.wake()
    return {"applied": True, "invoice": paid.invoice_id, "payouts": len(recorded.payouts)}


async def charge_refunded(billing: Billing, event: dict[str, Any], raw: bytes) -> dict[str, Any]:
    charge = event["data"]["object"]
    reversals = await to_thread.run_sync(
        billing.payouts.ledger.record_refund,
        (event["id"], event["type"]),
        str(charge["id"]),
        int(charge.get("amount") or 0),
        int(charge.get("amount_refunded") or 0),
        billing.now(),
    )
    if reversals is None:
        return {"applied": False, "reason": "already applied"}
    for reversal in reversals:
        log_event(
            "payout_reversal_recorded",
            invoice=reversal.invoice_id,
            author=reversal.author,
            charge=charge["id"],
            refunded_cents=reversal.refunded_cents,
            cents=reversal.cents,
        )
    billing.payouts.wake()
    return {"applied": True, "reversals": len(reversals)}


async def account_updated(billing: Billing, event: dict[str, Any], raw: bytes) -> dict[str, Any]:
    account_id = str(event["data"]["object"]["id"])
    client = billing.stripe
    if client is None:
        raise Unavailable("Stripe is not configured here: STRIPE_SECRET_KEY is not set")
    try:
        # Events may arrive out of order: the account as it is now, not as the event saw it.
        account = await client.v1.accounts.retrieve_async(account_id)
    except stripe.StripeError as error:
        raise Unavailable(f"could not read the account from Stripe ({type(error).__name__})") from None
    author = await to_thread.run_sync(
        billing.payouts.ledger.update_account,
        (event["id"], event["type"]),
        account_id,
        bool(account.payouts_enabled),
        bool(account.details_submitted),
        billing.now(),
    )
    if author is None:
        return {"applied": True, "reason": "not an author's account, or seen before"}
    log_event(
        "author_account_updated",
        author=author.handle,
        account=account_id,
        payouts_enabled=author.payouts_enabled,
        details_submitted=author.details_submitted,
    )
    if author.payouts_enabled:
        billing.payouts.wake()  # what the author earned meanwhile is paid now
    return {"applied": True, "author": author.handle, "payouts_enabled": author.payouts_enabled}


HANDLERS = {INVOICE_PAID: invoice_paid, CHARGE_REFUNDED: charge_refunded, ACCOUNT_UPDATED: account_updated}

"""TEST SUPPORT ONLY, part of devtools/teststripe/server.py: subscriptions' invoices for metered
usage, paid with a PaymentIntent and its charge, and refunds of that charge. Each behaviour names
the Stripe page it follows, in the shape of API version 2025-03-31.basil and later (an invoice
names no charge: its payments do).

Simplifications, on purpose: a period is invoiced when a test says so
(`POST /_test/subscriptions/{id}/invoice`), and is paid at once by the customer's card; no tax,
discounts or proration.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from devtools.teststripe.checkout import deliver_pending, queue_event

if TYPE_CHECKING:
    from devtools.teststripe.server import State

# https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts: $0.50. Below it an
# invoice is marked paid and the amount is added to the customer's balance, owed on the next
# (https://docs.stripe.com/api/invoices/object, the invoice's description).
MINIMUM_CHARGE = {"usd": 50}


def _error(status: int, message: str, param: str | None = None, code: str | None = None) -> Exception:
    from devtools.teststripe.server import StripeError

    code = code or ("resource_missing" if status == 404 else None)
    return StripeError(status, message, code=code, param=param)


def invoice_period(s: State, subscription_id: str, start: int, end: int) -> dict[str, Any]:
    """The invoice for a subscription's metered usage in [start, end), finalized and paid
    (https://docs.stripe.com/billing/subscriptions/usage-based/how-it-works: usage is billed in
    arrears; each line is quantity x unit_amount_decimal, rounded to a whole cent)."""
    subscription = s.get("subscription", subscription_id)
    customer = s.get("customer", subscription["customer"])
    invoice_id = s.new_id("in")
    lines = []
    for item in subscription["items"]["data"]:
        price = s.get("price", item["price"]["id"])
        meter = (price["recurring"] or {}).get("meter")
        if not meter:
            continue
        quantity = int(s.aggregated(meter, customer["id"], start, end))
        amount = int((quantity * Decimal(price["unit_amount_decimal"])).quantize(Decimal(1), ROUND_HALF_UP))
        lines.append(
            {
                "id": s.new_id("il"),
                "object": "line_item",
                "amount": amount,
                "currency": price["currency"],
                "description": f"{quantity} x {price.get('nickname') or price['id']}",
                "invoice": invoice_id,
                "period": {"start": start, "end": end},
                "quantity": quantity,
                "pricing": {
                    "type": "price_details",
                    "price_details": {"price": price["id"], "product": price["product"]},
                    "unit_amount_decimal": price["unit_amount_decimal"],
                },
                "parent": {
                    "type": "subscription_item_details",
                    "subscription_item_details": {
                        "subscription": subscription_id,
                        "subscription_item": item["id"],
                    },
                },
                "livemode": False,
            }
        )
    subtotal = sum(line["amount"] for line in lines)
    starting = int(customer.get("balance") or 0)
    now = int(s.clock())
    invoice = {
        "id": invoice_id,
        "object": "invoice",
        "customer": customer["id"],
        "currency": "usd",
        "status": "open",
        "lines": {
            "object": "list",
            "data": lines,
            "has_more": False,
            "total_count": len(lines),
            "url": f"/v1/invoices/{invoice_id}/lines",
        },
        "subtotal": subtotal,
        "total": subtotal,
        "starting_balance": starting,
        "amount_due": max(subtotal + starting, 0),
        "amount_paid": 0,
        "amount_remaining": max(subtotal + starting, 0),
        "period_start": start,
        "period_end": end,
        "parent": {"type": "subscription_details", "subscription_details": {"subscription": subscription_id}},
        "status_transitions": {"finalized_at": now, "paid_at": None},
        "created": now,
        "livemode": False,
    }
    s.objects[invoice_id] = invoice
    queue_event(s, "invoice.finalized", invoice)
    _pay(s, invoice, customer)
    return invoice


def _pay(s: State, invoice: dict[str, Any], customer: dict[str, Any]) -> None:
    due, now = invoice["amount_due"], int(s.clock())
    if due < MINIMUM_CHARGE.get(invoice["currency"], 50):
        customer["balance"] = invoice["starting_balance"] + invoice["subtotal"]  # owed, or a credit left
    else:
        customer["balance"] = 0
        intent_id, charge_id = s.new_id("pi"), s.new_id("ch")
        charge = {
            "id": charge_id,
            "object": "charge",
            "amount": due,
            "amount_captured": due,
            "amount_refunded": 0,
            "captured": True,
            "currency": invoice["currency"],
            "customer": customer["id"],
            "paid": True,
            "payment_intent": intent_id,
            "refunded": False,
            "status": "succeeded",
            "balance_transaction": s.new_id("txn"),
            "transfer_group": None,
            "created": now,
            "livemode": False,
        }
        intent = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": due,
            "amount_received": due,
            "currency": invoice["currency"],
            "customer": customer["id"],
            "latest_charge": charge_id,
            "status": "succeeded",
            "created": now,
            "livemode": False,
        }
        payment = {
            "id": s.new_id("inpay"),
            "object": "invoice_payment",
            "amount_paid": due,
            "amount_requested": due,
            "currency": invoice["currency"],
            "invoice": invoice["id"],
            "is_default": True,
            "payment": {"type": "payment_intent", "payment_intent": intent_id},
            "status": "paid",
            "status_transitions": {"canceled_at": None, "paid_at": now},
            "created": now,
            "livemode": False,
        }
        for obj in (charge, intent, payment):
            s.objects[obj["id"]] = obj
        queue_event(s, "charge.succeeded", charge)
        queue_event(s, "payment_intent.succeeded", intent)
        invoice["amount_paid"] = due
    invoice.update(status="paid", amount_remaining=0, ending_balance=customer["balance"])
    invoice["status_transitions"]["paid_at"] = now
    queue_event(s, "invoice.paid", invoice)
    queue_event(s, "invoice.payment_succeeded", invoice)


def list_invoice_lines(s: State, p: dict[str, Any], path: dict[str, str]) -> dict[str, Any]:
    # https://docs.stripe.com/api/invoices/invoice_lines
    from devtools.teststripe.server import _listing

    invoice = s.get("invoice", path["id"])
    return _listing(list(invoice["lines"]["data"]), p, invoice["lines"]["url"])


def list_invoice_payments(s: State, p: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    # https://docs.stripe.com/api/invoice-payment/list: by invoice, by status
    from devtools.teststripe.server import _listing

    payments = [
        payment
        for payment in reversed(s.of("invoice_payment"))
        if p.get("invoice") in (None, payment["invoice"]) and p.get("status") in (None, payment["status"])
    ]
    return _listing(payments, p, "/v1/invoice_payments")


def create_refund(s: State, p: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    # https://docs.stripe.com/api/refunds/create: of a charge or a PaymentIntent's charge, all
    # of what is left by default; then `charge.refunded` (https://docs.stripe.com/api/events/types).
    if p.get("payment_intent"):
        intent = s.get("payment_intent", p["payment_intent"], "payment_intent")
        charge = s.get("charge", intent["latest_charge"], "payment_intent")
    else:
        charge = s.get("charge", p.get("charge") or "", "charge")
    left = charge["amount"] - charge["amount_refunded"]
    if left <= 0:
        raise _error(
            400, f"Charge {charge['id']} has already been refunded.", "charge", "charge_already_refunded"
        )
    from devtools.teststripe.server import _integer

    amount = _integer(p, "amount") if "amount" in p else left
    if amount <= 0 or amount > left:
        raise _error(
            400,
            f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})"
            if amount > 0
            else "Invalid amount: must be a positive integer.",
            "amount",
            "amount_too_large" if amount > 0 else "parameter_invalid_integer",
        )
    refund = {
        "id": s.new_id("re"),
        "object": "refund",
        "amount": amount,
        "charge": charge["id"],
        "payment_intent": charge["payment_intent"],
        "currency": charge["currency"],
        "reason": p.get("reason"),
        "metadata": p.get("metadata", {}),
        "status": "succeeded",
        "created": int(s.clock()),
    }
    s.objects[refund["id"]] = refund
    charge["amount_refunded"] += amount
    charge["refunded"] = charge["amount_refunded"] == charge["amount"]
    queue_event(s, "refund.created", refund)
    queue_event(s, "charge.refunded", charge)
    return refund


ENDPOINTS = [
    ("/v1/invoices/{id}", lambda s, p, path: s.get("invoice", path["id"]), "GET"),
    ("/v1/invoices/{id}/lines", list_invoice_lines, "GET"),
    ("/v1/invoice_payments", list_invoice_payments, "GET"),
    ("/v1/payment_intents/{id}", lambda s, p, path: s.get("payment_intent", path["id"]), "GET"),
    ("/v1/charges/{id}", lambda s, p, path: s.get("charge", path["id"]), "GET"),
    ("/v1/refunds", create_refund, "POST"),
    ("/v1/refunds/{id}", lambda s, p, path: s.get("refund", path["id"]), "GET"),
]


def scripted_routes(s: State) -> list[Route]:
    """A test plays the calendar: a billing period ends and its invoice is paid."""

    async def invoice(request: Request) -> JSONResponse:
        body = await request.json()
        made = invoice_period(
            s, request.path_params["id"], int(body["period_start"]), int(body["period_end"])
        )
        return JSONResponse({"invoice": made, "deliveries": await deliver_pending(s)})

    return [Route("/_test/subscriptions/{id}/invoice", invoice, methods=["POST"])]

"""What a paid invoice is, for payouts, asked of Stripe: its usage lines (which meter, which
period) and the charge that paid it.

Since API version 2025-03-31.basil an invoice names neither its charge nor its PaymentIntent:
the charge is found through the invoice's payments (`GET /v1/invoice_payments?invoice=...`), whose
payment is a PaymentIntent (its `latest_charge`) or, for a charge made without one, the charge.
A line names its price (`pricing.price_details.price`); the price names its meter; the meter
names the event name our usage was metered under. Prices and meters never change, so what they
say is remembered.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

import stripe

from proxy.billing.payouts.store import PaidInvoice, UsageLine
from proxy.logs import log_event


class InvoiceReader:
    def __init__(self, client: stripe.StripeClient) -> None:
        self._client = client
        self._meters: dict[str, str | None] = {}  # price id -> the event name of its meter

    async def paid(self, invoice: dict[str, Any]) -> PaidInvoice:
        """Raises the SDK's errors as they come (the webhook answers 503; Stripe retries)."""
        invoice_id = str(invoice["id"])
        lines = []
        page = await self._client.v1.invoices.line_items.list_async(invoice_id, {"limit": 100})
        async for line in page.auto_paging_iter():
            usage = await self._usage_line(line)
            if usage is not None:
                lines.append(usage)
        charge = await self._charge(invoice_id) if int(invoice.get("amount_paid") or 0) > 0 else None
        return PaidInvoice(
            invoice_id=invoice_id,
            customer=str(invoice["customer"]),
            currency=str(invoice.get("currency") or "usd"),
            charge_id=charge.id if charge is not None else None,
            charge_cents=int(charge.amount) if charge is not None else 0,
            refunded_cents=int(charge.amount_refunded) if charge is not None else 0,
            lines=tuple(lines),
        )

    async def _usage_line(self, item: Any) -> UsageLine | None:
        line = item.to_dict()
        pricing = line.get("pricing") or {}
        details = pricing.get("price_details") or {}
        price = details.get("price")
        price_id = price if isinstance(price, str) else (price or {}).get("id")
        if not isinstance(price_id, str):
            return None  # not a price's line (an invoice item, a credit): no usage of ours
        event_name = await self._event_name(price_id)
        if event_name is None:
            return None
        period = line["period"]
        return UsageLine(event_name, _iso(period["start"]), _iso(period["end"]), line.get("quantity"))

    async def _event_name(self, price_id: str) -> str | None:
        if price_id not in self._meters:
            price = await self._client.v1.prices.retrieve_async(price_id)
            meter_id = price.recurring.meter if price.recurring else None
            event_name = None
            if meter_id:
                event_name = (await self._client.v1.billing.meters.retrieve_async(meter_id)).event_name
            self._meters[price_id] = event_name
        return self._meters[price_id]

    async def _charge(self, invoice_id: str) -> Any:
        payments = await self._client.v1.invoice_payments.list_async(
            {"invoice": invoice_id, "status": "paid", "limit": 100}
        )
        paid = sorted(payments.data, key=lambda p: int(p.amount_paid or 0), reverse=True)
        if not paid:
            return None
        if len(paid) > 1:
            # Partial payments: the payouts draw on the largest charge, which the logs name.
            log_event(
                "payout_invoice_split_payment", level=logging.WARNING, invoice=invoice_id, payments=len(paid)
            )
        payment = paid[0].payment
        if payment.type == "payment_intent" and payment.payment_intent:
            intent_id = _id(payment.payment_intent)
            intent = await self._client.v1.payment_intents.retrieve_async(intent_id)
            charge_id = _id(intent.latest_charge) if intent.latest_charge else None
        elif payment.type == "charge" and payment.charge:
            charge_id = _id(payment.charge)
        else:
            charge_id = None
        return await self._client.v1.charges.retrieve_async(charge_id) if charge_id else None


def _id(value: Any) -> str:
    return value if isinstance(value, str) else str(value.id)


def _iso(unix: int) -> str:
    return datetime.datetime.fromtimestamp(int(unix), datetime.UTC).isoformat(timespec="microseconds")

"""Stripe's meter error reports: events it accepted, then refused when it processed them
(`v1.billing.meter.error_report_triggered`, per meter; `v1.billing.meter.no_meter_found`, for
events naming no active meter). Every row a report stands for becomes a dead letter: it no longer
counts as delivered, reconcile fails until it is dealt with, and `billing dead-letters resend`
sends it again once its cause is fixed.

A report is a thin event; its errors come from fetching it. Stripe lists at most a few sample
errors per code beside the true count, and has no call that lists the rest. So where a report
counts more errors than it names, the rows are found by asking Stripe what the code says is
wrong: for a customer Stripe does not know, every event of that customer on the meter; for no
meter, every event on an event name with no active meter. Other codes are logged with the
number left unnamed; reconcile shows their milliseconds missing at Stripe.
"""

from __future__ import annotations

import datetime
import logging
from typing import TYPE_CHECKING, Any

import stripe
from anyio import to_thread
from stripe.events import V1BillingMeterErrorReportTriggeredEvent, V1BillingMeterNoMeterFoundEvent

from proxy.billing.meter_rules import DUPLICATE, moment
from proxy.billing.reconcile import active_meters
from proxy.billing.stripe_api import retried
from proxy.errors import BadRequest, Unavailable
from proxy.logs import log_event

if TYPE_CHECKING:
    from proxy.billing import Billing

CUSTOMER_UNKNOWN = frozenset({"meter_event_customer_not_found", "meter_event_no_customer_defined"})
NO_METER = "no_meter"
LATE = datetime.timedelta(minutes=5)  # a row marked delivered just after Stripe validated it

Error = tuple[str, str, str]  # (identifier, code, message)


async def error_report(billing: Billing, event: dict[str, Any], raw: bytes) -> dict[str, Any]:
    full = await _fetch(billing, raw, V1BillingMeterErrorReportTriggeredEvent)
    named, unnamed = _read(full)
    until = _until(full)
    extra: list[Error] = []
    meter_id = (event.get("related_object") or {}).get("id")
    customers_unknown = sum(count for code, count in unnamed.items() if code in CUSTOMER_UNKNOWN)
    if customers_unknown and billing.stripe is not None and isinstance(meter_id, str):
        extra = await _unknown_customers(billing, billing.stripe, meter_id, until, {i for i, _, _ in named})
    return await _flag(billing, event, named, extra, unnamed, meter=meter_id)


async def no_meter_found(billing: Billing, event: dict[str, Any], raw: bytes) -> dict[str, Any]:
    full = await _fetch(billing, raw, V1BillingMeterNoMeterFoundEvent)
    named, unnamed = _read(full)
    extra: list[Error] = []
    if unnamed.get(NO_METER) and billing.stripe is not None:
        active = await active_meters(billing.stripe)
        lanes = await to_thread.run_sync(billing.usage_store.delivered_lanes, _until(full))
        seen = {identifier for identifier, _, _ in named}
        for event_name in sorted({name for _, name in lanes if name not in active}):
            ids = await to_thread.run_sync(billing.usage_store.delivered_ids, event_name, _until(full))
            extra += [(i, NO_METER, f"no active meter {event_name}") for i in ids if i not in seen]
    return await _flag(billing, event, named, extra, unnamed, meter=None)


async def _fetch(billing: Billing, raw: bytes, kind: type) -> Any:
    if billing.stripe is None:
        raise Unavailable("STRIPE_SECRET_KEY is not set here, so Stripe's report cannot be read")
    try:
        notification = billing.stripe.parse_event_notification_without_verification(raw)
        full = await notification.fetch_event_async()
    except stripe.StripeError as error:
        raise Unavailable(f"could not fetch the event from Stripe ({type(error).__name__})") from None
    if not isinstance(full, kind):
        raise BadRequest("the fetched event is not the meter error report its type says")
    return full


def _read(full: Any) -> tuple[list[Error], dict[str, int]]:
    """The errors the report names, and per code how many it counts but does not name. A
    duplicate is not an error for us: Stripe has that event."""
    named: list[Error] = []
    unnamed: dict[str, int] = {}
    for error_type in full.data.reason.error_types:
        if error_type.code == DUPLICATE:
            continue
        samples = [(s.request.identifier, error_type.code, s.error_message) for s in error_type.sample_errors]
        named += samples
        if error_type.error_count > len(samples):
            unnamed[error_type.code] = error_type.error_count - len(samples)
    return named, unnamed


def _until(full: Any) -> str:
    return (moment(full.data.validation_end.replace("Z", "+00:00")) + LATE).isoformat(timespec="microseconds")


async def _unknown_customers(
    billing: Billing, client: stripe.StripeClient, meter_id: str, until: str, seen: set[str]
) -> list[Error]:
    meter = await retried(client.v1.billing.meters.retrieve_async, meter_id)
    lanes = await to_thread.run_sync(billing.usage_store.delivered_lanes, until)
    found: list[Error] = []
    for customer in sorted(customer for customer, name in lanes if name == meter.event_name):
        if await _customer_known(client, customer):
            continue
        ids = await to_thread.run_sync(billing.usage_store.delivered_ids, meter.event_name, until, customer)
        found += [
            (i, "meter_event_customer_not_found", f"Stripe has no customer {customer}")
            for i in ids
            if i not in seen
        ]
    return found


async def _customer_known(client: stripe.StripeClient, customer: str) -> bool:
    try:
        found = await retried(client.v1.customers.retrieve_async, customer)
    except stripe.InvalidRequestError as error:
        if error.code == "resource_missing":
            return False
        raise
    return not getattr(found, "deleted", False)


async def _flag(
    billing: Billing,
    event: dict[str, Any],
    named: list[Error],
    extra: list[Error],
    unnamed: dict[str, int],
    *,
    meter: str | None,
) -> dict[str, Any]:
    errors = named + extra
    flagged = await to_thread.run_sync(
        billing.stripe_store.flag_meter_errors, (event["id"], event["type"]), errors, billing.now()
    )
    log_event(
        "stripe_meter_error_report",
        level=logging.ERROR,
        stripe_event=event["id"],
        type=event["type"],
        meter=meter,
        codes=sorted({code for _, code, _ in errors} | set(unnamed)),
        identifiers=[identifier for identifier, _, _ in errors],
        unnamed_by_stripe=unnamed,
        outbox_rows_flagged=flagged or 0,
    )
    return {"applied": flagged is not None, "outbox_rows_flagged": flagged or 0}

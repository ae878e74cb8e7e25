"""What the metering worker may send to Stripe, and what Stripe's answers mean: the rules, apart
from the worker that follows them (proxy/billing/metering.py).

Stripe keeps an event's identifier, and an idempotency key, for about 24 hours
(https://docs.stripe.com/api/billing/meter-event/create#create_billing_meter_event-identifier,
https://docs.stripe.com/api/idempotent_requests). Past that a resend of an event Stripe already
has is counted twice. So an event unconfirmed 23 hours after its first attempt (a lost answer,
then a day of failures; a crash before "delivered", then a day down) is dead-lettered, never
retried blindly, and so is an event that was never attempted from this ledger but is older than
that (a ledger restored from a backup taken before it was sent). `python -m proxy billing
dead-letters resend` checks Stripe's totals before it sends any of them again.
"""

from __future__ import annotations

import datetime
from typing import Literal

import stripe

from proxy.billing.store import MeterEvent

STRIPE_WINDOW = datetime.timedelta(days=35)  # https://docs.stripe.com/api/billing/meter-event/create
RESEND_WINDOW = datetime.timedelta(hours=23)  # an hour short of Stripe's 24
# Stripe's code for a second event with an identifier it holds (its OpenAPI spec:
# v2.error.duplicate_meter_event); its English message is for people and may change.
DUPLICATE = "duplicate_meter_event"


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def moment(iso: str) -> datetime.datetime:
    found = datetime.datetime.fromisoformat(iso)
    return found if found.tzinfo else found.replace(tzinfo=datetime.UTC)


def unix_seconds(iso: str) -> int:
    return int(moment(iso).timestamp())


def rfc3339(unix: int) -> str:
    """v2 takes timestamps as RFC 3339 strings; the same whole second as v1's Unix timestamp."""
    moment = datetime.datetime.fromtimestamp(unix, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def idempotency_key(event: MeterEvent, generation: int) -> str:
    # Stripe replays a key's first answer for 24 h, 5xx included: after a 5xx the next try needs
    # a new key (the identifier still stops a second event); otherwise the key stays the same.
    # A resend is a new event under a new identifier, so it gets keys of its own.
    resent = f"-s{event.resends}" if event.resends else ""
    suffix = f"-r{generation}" if generation else ""
    return f"modelfolio-meter-{event.prediction_id}{resent}{suffix}"


def unsendable(
    event: MeterEvent, now: datetime.datetime, window: datetime.timedelta = RESEND_WINDOW
) -> str | None:
    """Why `event` must not be sent now (its dead letter's reason), or None."""
    if now - datetime.datetime.fromtimestamp(unix_seconds(event.created_at), datetime.UTC) > STRIPE_WINDOW:
        return "older than Stripe's 35-day window for meter events"
    hours = int(window.total_seconds() // 3600)
    if event.first_attempt_at is not None and now - moment(event.first_attempt_at) > window:
        return (
            f"not confirmed by Stripe {hours} h after its first attempt: Stripe forgets identifiers after "
            "24 h, so a resend could count twice; `billing dead-letters resend` checks Stripe's totals first"
        )
    if event.first_attempt_at is None and now - moment(event.created_at) > window:
        return (
            f"made more than {hours} h ago and never sent from this ledger (a restored backup, or billing "
            "off for a day?): Stripe may have it; `billing dead-letters resend` checks Stripe's totals first"
        )
    return None


def verdict(error: stripe.InvalidRequestError) -> Literal["duplicate", "later", "dead"]:
    """A 400 from Stripe: an event it already has (delivered), one it refuses for its timestamp
    (our clock ahead of Stripe's by more than its 5 minutes: sent again later, until the window
    above closes), or one it will never take."""
    if error.code == DUPLICATE:
        return "duplicate"
    if error.param == "timestamp":
        return "later"
    return "dead"

"""`python -m proxy billing dead-letters [resend]`: the meter events the worker gave up on, and a
resend that first asks Stripe whether it has them.

A dead event may be at Stripe already: its answer was lost and Stripe has since forgotten the
identifier, or it was never sent from this ledger but from the one a backup replaced. A blind
resend would then count it twice. So, for each customer, meter and minute holding dead events,
Stripe's total for that minute is compared with what the ledger knows it delivered there:

    Stripe has exactly the delivered ms              none of them is at Stripe: resend them all
    Stripe has the delivered ms plus all of theirs   all are at Stripe: mark them delivered
    one subset of them accounts for the surplus      that subset is at Stripe; resend the rest
    anything else, or events of that minute still waiting for a worker: held, with the reason

A resend goes out under a new identifier (`<prediction id>.r1`, ...): Stripe may still hold the
old one for an event it refused after accepting it (an error report).
"""

from __future__ import annotations

import datetime
import itertools
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

import stripe
from anyio import to_thread

from proxy.billing.meter_rules import STRIPE_WINDOW, unix_seconds
from proxy.billing.reconcile import active_meters
from proxy.billing.store import DeadLetter, Lane, UsageStore

__all__ = ["DeadLetter", "Outcome", "resend"]
from proxy.billing.stripe_api import retried

MAX_SUBSET = 16  # dead events of one minute tried as subsets; past that, held for a person
SAFETY = datetime.timedelta(hours=1)  # a resend must reach Stripe well inside its 35 days


@dataclass(frozen=True)
class Outcome:
    prediction_id: str
    action: str  # "resent" | "found at Stripe" | "held"
    why: str

    def __str__(self) -> str:
        return f"{self.prediction_id}: {self.action} ({self.why})"


async def resend(
    client: stripe.StripeClient,
    store: UsageStore,
    dead: list[DeadLetter],
    now: datetime.datetime,
) -> list[Outcome]:
    meters = await active_meters(client)
    at = now.isoformat(timespec="microseconds")
    groups: dict[tuple[Lane, int], list[DeadLetter]] = defaultdict(list)
    for letter in dead:
        groups[letter.event.lane, unix_seconds(letter.event.created_at) // 60 * 60].append(letter)
    outcomes = []
    for (lane, start), letters in sorted(groups.items()):
        outcomes += await _settle(client, store, meters, lane, start, letters, now, at)
    return outcomes


async def _settle(
    client: stripe.StripeClient,
    store: UsageStore,
    meters: dict[str, str],
    lane: Lane,
    start: int,
    letters: list[DeadLetter],
    now: datetime.datetime,
    at: str,
) -> list[Outcome]:
    def held(why: str) -> list[Outcome]:
        return [Outcome(letter.event.prediction_id, "held", why) for letter in letters]

    customer, event_name = lane
    if event_name not in meters:
        return held(f"Stripe has no active meter {event_name}; run `billing sync-catalog`, then resend")
    if now - datetime.datetime.fromtimestamp(start, datetime.UTC) > STRIPE_WINDOW - SAFETY:
        return held("too old for Stripe's 35-day window: bill it another way, e.g. an invoice item")
    since, until = _iso(start), _iso(start + 60)
    if await to_thread.run_sync(store.waiting_in, lane, since, until):
        return held("events of that minute still wait for a worker; resend once the outbox has drained")
    summaries = await retried(
        client.v1.billing.meters.event_summaries.list_async,
        meters[event_name],
        {"customer": customer, "start_time": start, "end_time": start + 60},
    )
    at_stripe = sum((Decimal(str(s.aggregated_value)) for s in summaries.data), Decimal(0))
    surplus = at_stripe - await to_thread.run_sync(store.delivered_in, lane, since, until)
    there = _accounting_for(surplus, letters)
    if there is None:
        return held(
            f"Stripe has {surplus} ms more than the ledger delivered that minute; no set of these explains it"
        )
    outcomes = []
    for letter in letters:
        if letter in there:
            await to_thread.run_sync(store.found_at_stripe, letter.event.prediction_id, at)
            outcomes.append(
                Outcome(letter.event.prediction_id, "found at Stripe", "marked delivered, not sent")
            )
        elif await to_thread.run_sync(store.requeue, letter.event):
            outcomes.append(
                Outcome(letter.event.prediction_id, "resent", "Stripe's total shows it does not have it")
            )
        else:
            outcomes.append(Outcome(letter.event.prediction_id, "held", "someone resent it a moment ago"))
    return outcomes


def _accounting_for(surplus: Decimal, letters: list[DeadLetter]) -> list[DeadLetter] | None:
    """The one subset of `letters` whose milliseconds make up `surplus`, or None if none or
    several do (then nobody can tell which are at Stripe)."""
    if surplus == 0:
        return []
    if len(letters) > MAX_SUBSET or surplus < 0:
        return None
    found = [
        list(subset)
        for size in range(1, len(letters) + 1)
        for subset in itertools.combinations(letters, size)
        if sum(letter.event.value_ms for letter in subset) == surplus
    ]
    return found[0] if len(found) == 1 else None


def _iso(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="microseconds")

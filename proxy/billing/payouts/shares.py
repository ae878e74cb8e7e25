"""Authors' shares, exactly: each prediction's share is its amount x the author's share, kept
exact; an invoice's shares for one author are summed, the remainder carried from the author's
last transfer is added, and the total is rounded down to the cent once, for the transfer. What
the rounding leaves (less than a cent) is carried to the author's next transfer, so over any
number of predictions and invoices nothing is lost and nothing is paid twice.

Rounding down, not half-up: a transfer then never exceeds what the author earned, so the sum
of an invoice's transfers never exceeds the revenue its charge collected.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, Inexact, localcontext

from proxy.billing.money import CENT, exact


def share_of(amount: Decimal, share: Decimal) -> Decimal:
    with localcontext() as context:
        context.prec = 100
        context.traps[Inexact] = True  # a share is exact or it is a bug
        return amount * share


@dataclass(frozen=True)
class Transfer:
    """One author's transfer for one invoice: `cents` sent, `carried_out` owed to the next."""

    earned: Decimal  # the exact sum of this invoice's shares
    carried_in: Decimal
    cents: int
    carried_out: Decimal

    def as_text(self) -> tuple[str, str, int, str]:
        return exact(self.earned), exact(self.carried_in), self.cents, exact(self.carried_out)


def transfer_for(earned: Decimal, carried_in: Decimal, *, collected: bool = True) -> Transfer:
    """The one rounding. `collected`: the invoice had a charge to transfer from; without one
    (Stripe charges nothing below its minimum and adds the amount to the customer's next
    invoice) everything is carried to the author's next transfer."""
    due = earned + carried_in
    if not collected or due <= 0:
        return Transfer(earned, carried_in, 0, due)
    dollars = due.quantize(CENT, rounding=ROUND_DOWN)
    return Transfer(earned, carried_in, int(dollars * 100), due - dollars)


def reversal_target(transferred_cents: int, refunded_cents: int, charge_cents: int) -> int:
    """How much of a transfer is reversed in total once `refunded_cents` of its charge are
    refunded: the same fraction, rounded half-up once. Cumulative, so that a full refund
    reverses the whole transfer however many partial refunds came before."""
    if charge_cents <= 0 or refunded_cents <= 0:
        return 0
    if refunded_cents >= charge_cents:
        return transferred_cents
    target = Decimal(transferred_cents) * refunded_cents / charge_cents
    return min(transferred_cents, int(target.quantize(Decimal(1), rounding=ROUND_HALF_UP)))

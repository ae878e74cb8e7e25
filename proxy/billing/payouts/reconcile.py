"""The ledger's payouts against Stripe's transfers, to the cent: for each (invoice, author), what
the ledger says was transferred less what it says was reversed, against the same at Stripe (the
transfers with our metadata in the invoice's transfer group, less their `amount_reversed`).

Any difference counts: a transfer Stripe has that the ledger has not marked (a worker died after
Stripe answered: the next worker marks it), two transfers for one payout, a reversal on one side
only, a payout Stripe refused (dead-lettered). Payouts still waiting in the outbox are counted,
not compared.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import stripe
from anyio import to_thread

from proxy.billing.payouts.outbox import TransferOutbox
from proxy.billing.payouts.worker import metadata

Key = tuple[str, str]  # (invoice id, author)


@dataclass(frozen=True)
class TransferDifference:
    invoice_id: str
    author: str
    ledger_cents: int
    stripe_cents: int
    note: str = ""

    def __str__(self) -> str:
        note = f" ({self.note})" if self.note else ""
        return (
            f"DIFFERENCE transfer {self.invoice_id} {self.author}: ledger {self.ledger_cents} cents, "
            f"Stripe {self.stripe_cents} cents{note}"
        )


@dataclass(frozen=True)
class TransferReport:
    differences: list[TransferDifference]
    compared: int
    ledger_cents: int  # net, over every delivered payout
    stripe_cents: int
    waiting: int  # transfers and reversals not sent yet (their authors can be paid)
    dead: int

    def lines(self) -> list[str]:
        return [
            *(str(difference) for difference in self.differences),
            f"{self.compared} author payouts compared: ledger {self.ledger_cents} cents, Stripe "
            f"{self.stripe_cents} cents net of reversals; {len(self.differences)} difference(s); "
            f"{self.waiting} transfer(s) or reversal(s) still in the outbox, {self.dead} dead-lettered",
        ]

    @property
    def agrees(self) -> bool:
        return not self.differences and not self.dead


async def reconcile_transfers(client: stripe.StripeClient, outbox: TransferOutbox) -> TransferReport:
    ledger = await to_thread.run_sync(outbox.delivered)
    stats = await to_thread.run_sync(outbox.stats)
    theirs: dict[Key, list[tuple[str, int]]] = defaultdict(list)
    listed = await client.v1.transfers.list_async({"limit": 100})
    async for transfer in listed.auto_paging_iter():
        author = metadata(transfer).get("modelfolio_author")
        if author and transfer.transfer_group:
            net = int(transfer.amount) - int(transfer.amount_reversed or 0)
            theirs[(transfer.transfer_group, author)].append((transfer.id, net))
    ours = {(row.invoice_id, row.author): row for row in ledger}
    differences = []
    for key in sorted(set(ours) | set(theirs)):
        row, found = ours.get(key), theirs.get(key, [])
        ledger_cents = row.cents - row.reversed_cents if row else 0
        stripe_cents = sum(net for _, net in found)
        note = ""
        if len(found) > 1:
            note = f"{len(found)} transfers at Stripe"
        elif row is None:
            note = "not marked sent in the ledger"
        elif not found or found[0][0] != row.transfer_id:
            note = f"the ledger's {row.transfer_id} is not at Stripe"
        if note or ledger_cents != stripe_cents:
            differences.append(TransferDifference(*key, ledger_cents, stripe_cents, note))
    return TransferReport(
        differences,
        len(set(ours) | set(theirs)),
        sum(row.cents - row.reversed_cents for row in ledger),
        sum(net for found in theirs.values() for _, net in found),
        stats.transfers_waiting + stats.reversals_waiting,
        stats.dead,
    )

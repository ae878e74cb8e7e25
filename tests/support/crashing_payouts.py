"""`python -m tests.support.crashing_payouts DATABASE_URL STRIPE_URL`: a transfer worker that dies
(os._exit, as a SIGKILL or a power cut would leave it) the moment Stripe has made its first
transfer, before the ledger records it."""

from __future__ import annotations

import os
import sys
from typing import Any

from proxy.billing.payouts.outbox import TransferOutbox
from proxy.storage import open_database
from tests.support.payouts import drain_transfers


class _DiesOnMark(TransferOutbox):
    def mark_sent(self, payout: Any, stripe_id: str, at: str) -> None:
        os._exit(17)


def main() -> None:
    database_url, stripe_url = sys.argv[1:3]
    drain_transfers(_DiesOnMark(open_database(database_url)), stripe_url)
    sys.exit("the worker sent nothing: it should have died after the first transfer")


if __name__ == "__main__":
    main()

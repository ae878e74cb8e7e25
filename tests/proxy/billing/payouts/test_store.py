"""The authors' ledger, on SQLite and PostgreSQL: a paid invoice shares each of its predictions
out once, one payout per author, rounded once with the remainder carried; refunds reverse the
same fraction of each transfer, once, whatever the order or number of the events."""

from __future__ import annotations

import random
import threading
from decimal import ROUND_DOWN, Decimal

from proxy.billing.payouts.outbox import TransferOutbox
from proxy.billing.payouts.store import PayoutLedger
from proxy.billing.store import UsageStore
from proxy.storage import Database
from tests.support.payouts import AUTHORS, CATS, DIGITS, at, iso, paid_invoice, use

CUSTOMER = "cus_payouts1"


def test_a_paid_invoice_pays_each_author_their_share_once(any_database: Database) -> None:
    usage, ledger = UsageStore(any_database), PayoutLedger(any_database)
    # digits at $0.05/s: 2.5 s is 12.5 cents; cats at $0.02/s: 1 s is 2 cents.
    for i in range(4):
        use(usage, f"d{i}", CUSTOMER, DIGITS, 2500, "0.05", at(i))
    for i in range(3):
        use(usage, f"c{i}", CUSTOMER, CATS, 1000, "0.02", at(10 + i))
    use(usage, "other", "cus_someone_else", DIGITS, 2500, "0.05", at(5))
    use(usage, "late", CUSTOMER, DIGITS, 2500, "0.05", at(3600))  # after the period

    recorded = ledger.record_invoice(
        ("evt_1", "invoice.paid"), paid_invoice("in_1", CUSTOMER, at(0), at(60)), AUTHORS, iso(at(100))
    )

    assert recorded is not None and recorded.predictions == 7
    cents = {payout.author: (payout.cents, payout.carried_out) for payout in recorded.payouts}
    assert cents == {"ada": (25, "0"), "bob": (1, "0.008")}  # 4 x 12.5 x 0.5; 3 x 2 x 0.3 = 1.8
    # Stripe sends the same event again; another event about the same invoice finds nothing new.
    assert (
        ledger.record_invoice(
            ("evt_1", "invoice.paid"), paid_invoice("in_1", CUSTOMER, at(0), at(60)), AUTHORS, iso(at(101))
        )
        is None
    )
    again = ledger.record_invoice(
        ("evt_2", "invoice.paid"), paid_invoice("in_2", CUSTOMER, at(0), at(60)), AUTHORS, iso(at(102))
    )
    assert again is not None and again.predictions == 0
    assert again.payouts == []
    assert [p.cents for p in ledger.payouts_of("in_1")] == [25, 1]


def test_a_model_without_an_author_earns_the_owner_alone(any_database: Database) -> None:
    usage, ledger = UsageStore(any_database), PayoutLedger(any_database)
    use(usage, "own", CUSTOMER, "modelfolio/owners-own", 5000, "0.05", at(1))
    invoice = paid_invoice("in_own", CUSTOMER, at(0), at(60), models=("modelfolio/owners-own",))

    recorded = ledger.record_invoice(("evt_own", "invoice.paid"), invoice, AUTHORS, iso(at(100)))

    assert recorded is not None and recorded.payouts == [] and recorded.predictions == 0


def test_1000_predictions_shares_lose_not_a_cent_over_many_invoices(any_database: Database) -> None:
    usage, ledger = UsageStore(any_database), PayoutLedger(any_database)
    rng = random.Random(11)
    shares = []
    for i in range(1000):
        ms = rng.randint(1, 4000)  # $0.0005/s: each prediction is a few thousandths of a cent
        shares.append(use(usage, f"p{i:04d}", CUSTOMER, DIGITS, ms, "0.0005", at(i * 6)) * Decimal("0.5"))
    exact = sum(shares, Decimal(0))
    transferred = 0
    for month in range(10):  # ten invoices of 100 predictions each
        invoice = paid_invoice(
            f"in_{month}", CUSTOMER, at(month * 600), at((month + 1) * 600), models=(DIGITS,)
        )
        recorded = ledger.record_invoice((f"evt_{month}", "invoice.paid"), invoice, AUTHORS, iso(at(7000)))
        assert recorded is not None and recorded.predictions == 100
        transferred += sum(payout.cents for payout in recorded.payouts)
    carry = Decimal(ledger.author("ada").carry)  # type: ignore[union-attr]

    assert Decimal(transferred) / 100 + carry == exact  # nothing lost, nothing made up
    assert transferred == int(exact.quantize(Decimal("0.01"), rounding=ROUND_DOWN) * 100)
    assert 0 <= carry < Decimal("0.01")
    # Rounding each prediction's share down to the cent, as the seed article did, pays nothing.
    assert sum(share.quantize(Decimal("0.01"), rounding=ROUND_DOWN) for share in shares) == 0 < transferred


def test_an_invoice_stripe_did_not_charge_carries_every_share_to_the_next(any_database: Database) -> None:
    usage, ledger = UsageStore(any_database), PayoutLedger(any_database)
    use(usage, "small", CUSTOMER, DIGITS, 2500, "0.05", at(1))  # 12.5 cents: below Stripe's minimum
    use(usage, "big", CUSTOMER, DIGITS, 50000, "0.05", at(70))  # $2.50

    first = ledger.record_invoice(
        ("evt_a", "invoice.paid"),
        paid_invoice("in_a", CUSTOMER, at(0), at(60), charge=None),
        AUTHORS,
        iso(at(80)),
    )
    second = ledger.record_invoice(
        ("evt_b", "invoice.paid"),
        paid_invoice("in_b", CUSTOMER, at(60), at(120), charge="ch_b"),
        AUTHORS,
        iso(at(90)),
    )

    assert first is not None and [(p.cents, p.carried_out) for p in first.payouts] == [(0, "0.0625")]
    assert second is not None and [(p.cents, p.carried_in) for p in second.payouts] == [(131, "0.0625")]


def test_refunds_reverse_the_same_fraction_once_in_any_order(any_database: Database) -> None:
    usage, ledger = UsageStore(any_database), PayoutLedger(any_database)
    for i in range(8):
        use(usage, f"d{i}", CUSTOMER, DIGITS, 25000, "0.05", at(i))  # $1.25 each: ada gets 62.5 cents
    use(usage, "c0", CUSTOMER, CATS, 50000, "0.02", at(9))  # $1.00: bob gets 30 cents
    ledger.record_invoice(
        ("evt_paid", "invoice.paid"),
        paid_invoice("in_r", CUSTOMER, at(0), at(60), charge="ch_r", charge_cents=1100),
        AUTHORS,
        iso(at(61)),
    )

    quarter = ledger.record_refund(("evt_r1", "charge.refunded"), "ch_r", 1100, 275, iso(at(62)))
    assert quarter is not None and [(r.author, r.cents) for r in quarter] == [
        ("ada", 125),
        ("bob", 8),
    ]  # 7.5 -> 8
    assert ledger.record_refund(("evt_r1", "charge.refunded"), "ch_r", 1100, 275, iso(at(63))) is None
    everything = ledger.record_refund(("evt_r2", "charge.refunded"), "ch_r", 1100, 1100, iso(at(64)))
    late_quarter = ledger.record_refund(("evt_r0", "charge.refunded"), "ch_r", 1100, 275, iso(at(65)))

    assert everything is not None and [(r.author, r.cents) for r in everything] == [("ada", 375), ("bob", 22)]
    assert late_quarter == []  # an older, smaller total arriving late adds nothing
    reversed_ = {}
    for reversal in ledger.reversals_of("in_r"):
        reversed_[reversal.author] = reversed_.get(reversal.author, 0) + reversal.cents
    assert (
        reversed_
        == {payout.author: payout.cents for payout in ledger.payouts_of("in_r")}
        == {"ada": 500, "bob": 30}
    )


def test_a_refund_seen_before_its_invoice_is_reversed_when_the_invoice_is_recorded(
    any_database: Database,
) -> None:
    usage, ledger = UsageStore(any_database), PayoutLedger(any_database)
    use(usage, "d0", CUSTOMER, DIGITS, 40000, "0.05", at(1))  # $2: ada gets $1
    assert ledger.record_refund(("evt_early", "charge.refunded"), "ch_e", 200, 200, iso(at(2))) == []

    ledger.record_invoice(
        ("evt_inv", "invoice.paid"),
        paid_invoice("in_e", CUSTOMER, at(0), at(60), charge="ch_e", charge_cents=200, refunded_cents=200),
        AUTHORS,
        iso(at(3)),
    )

    assert [(r.author, r.cents) for r in ledger.reversals_of("in_e")] == [("ada", 100)]


def test_invoices_recorded_at_once_by_two_proxies_keep_the_authors_carry(any_database: Database) -> None:
    usage, ledger = UsageStore(any_database), PayoutLedger(any_database)
    exact = Decimal(0)
    for i in range(20):
        exact += use(usage, f"d{i}", CUSTOMER, DIGITS, 333, "0.05", at(i * 10)) * Decimal("0.5")
    invoices = [
        paid_invoice(f"in_{i}", CUSTOMER, at(i * 10), at(i * 10 + 10), models=(DIGITS,)) for i in range(20)
    ]
    start = threading.Barrier(4)

    def record(part: list[int]) -> None:
        start.wait()
        for i in part:
            ledger.record_invoice((f"evt_{i}", "invoice.paid"), invoices[i], AUTHORS, iso(at(500)))

    threads = [
        threading.Thread(target=record, args=([i for i in range(20) if i % 4 == k],)) for k in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    transferred = sum(p.cents for i in range(20) for p in ledger.payouts_of(f"in_{i}"))
    assert Decimal(transferred) / 100 + Decimal(ledger.author("ada").carry) == exact  # type: ignore[union-attr]


def test_only_authors_who_can_be_paid_are_worked_on_and_a_reversal_waits_for_its_transfer(
    any_database: Database,
) -> None:
    usage, ledger, outbox = UsageStore(any_database), PayoutLedger(any_database), TransferOutbox(any_database)
    use(usage, "d0", CUSTOMER, DIGITS, 40000, "0.05", at(1))
    use(usage, "c0", CUSTOMER, CATS, 50000, "0.02", at(2))
    ledger.record_invoice(
        ("evt", "invoice.paid"),
        paid_invoice("in_o", CUSTOMER, at(0), at(60), charge_cents=300),
        AUTHORS,
        iso(at(3)),
    )
    ledger.record_refund(("evt_ref", "charge.refunded"), "ch_1", 300, 300, iso(at(4)))
    ledger.set_account("ada", "acct_ada", iso(at(5)))
    ledger.set_account("bob", "acct_bob", iso(at(5)))
    ledger.update_account(("evt_acc", "account.updated"), "acct_ada", True, True, iso(at(6)))

    assert outbox.claim_lanes("w1", iso(at(10)), iso(at(70)), 10) == ["ada"]  # bob's payouts are off
    assert outbox.claim_lanes("w2", iso(at(11)), iso(at(71)), 10) == []  # w1 holds ada's lane
    work = outbox.work("ada")
    assert work is not None and [p.cents for p in work.transfers] == [100] and work.reversals == []
    assert outbox.stats().held_cents == 30

    outbox.mark_sent(work.transfers[0], "tr_1", iso(at(12)))
    work = outbox.work("ada")
    assert (
        work is not None
        and work.transfers == []
        and [(r.cents, t) for r, t in work.reversals] == [(100, "tr_1")]
    )
    outbox.release("w1", "ada")
    assert outbox.claim_lanes("w2", iso(at(13)), iso(at(73)), 10) == ["ada"]
    assert outbox.claim_lanes("w3", iso(at(74)), iso(at(134)), 10) == ["ada"]  # w2's lease ran out

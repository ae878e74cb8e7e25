"""Money: milliseconds and amounts, exact, rounded once (half-up) when shown."""

from __future__ import annotations

from decimal import Decimal

import pytest

from proxy.billing import amount_for, exact, meter_event_name, predict_time_ms, summarize, to_cents
from proxy.ledger import Usage


@pytest.mark.parametrize(
    ("seconds", "ms", "amount"),
    [
        (1.25, 1250, "0.000625"),  # 1250.0 ms
        (1.250499, 1250, "0.000625"),  # 1250.499 ms rounds down
        (1.2505, 1251, "0.0006255"),  # 1250.5 ms rounds half up
        (1.250999, 1251, "0.0006255"),  # 1250.999 ms rounds up
        (0.0125, 13, "0.0000065"),
        (0, 0, "0"),
    ],
)
def test_predict_time_rounds_half_up_to_whole_milliseconds_and_the_amount_is_exact(
    seconds: float, ms: int, amount: str
) -> None:
    assert predict_time_ms(seconds) == ms
    assert exact(amount_for(Decimal("0.0005"), ms)) == amount


def test_a_float_that_binary_cannot_hold_exactly_still_rounds_as_written() -> None:
    # 1.0005 is 1.000499999... as a binary float; the JSON said 1.0005, so it is 1001 ms.
    assert predict_time_ms(1.0005) == 1001
    assert predict_time_ms("1.0005") == 1001


@pytest.mark.parametrize("nonsense", [None, True, "soon", -0.5, float("nan"), float("inf"), [1]])
def test_a_predict_time_that_is_not_a_duration_is_not_billed(nonsense: object) -> None:
    assert predict_time_ms(nonsense) is None


@pytest.mark.parametrize(
    ("amount", "cents"),
    [("0.004999", "0.00"), ("0.005", "0.01"), ("0.0149999", "0.01"), ("0.015", "0.02"), ("12", "12.00")],
)
def test_amounts_are_shown_half_up_to_the_cent(amount: str, cents: str) -> None:
    assert to_cents(Decimal(amount)) == cents


def test_exact_amounts_never_use_exponent_notation() -> None:
    assert exact(amount_for(Decimal("0.00000001"), 1)) == "0.00000000001"
    assert exact(amount_for(Decimal(100), 1000)) == "100"


def test_meter_event_names_are_stripe_friendly() -> None:
    assert meter_event_name("modelfolio/digits") == "modelfolio_digits_predict_ms"
    assert meter_event_name("Some-One/fashion.mnist") == "some_one_fashion_mnist_predict_ms"


def usage(prediction_id: str, model: str, ms: int, amount: str) -> Usage:
    return Usage(
        prediction_id,
        "customer:cus_A",
        "cus_A",
        model,
        "v1",
        ms,
        "0.0005",
        amount,
        "2025-06-01T00:00:00.000000+00:00",
    )


def test_totals_add_exact_amounts_and_round_only_the_sum() -> None:
    # Three predictions of $0.004 each: rounded one by one they would show $0.00.
    rows = [usage(f"p{i}", "o/digits", 8000, "0.004") for i in range(3)]
    rows.append(usage("p9", "o/fashion", 2, "0.000001"))
    totals = summarize(rows)
    assert totals["predictions"] == 4 and totals["predict_time_ms"] == 24002
    assert (totals["amount"], totals["amount_exact"]) == ("0.01", "0.012001")
    assert totals["by_model"]["o/digits"] == {
        "predictions": 3,
        "predict_time_ms": 24000,
        "amount": "0.01",
        "amount_exact": "0.012",
    }
    assert summarize([])["amount"] == "0.00"

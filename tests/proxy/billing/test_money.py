"""Money: every started millisecond billed, amounts exact, rounded once (half-up) when shown."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.billing.biller import summarize
from proxy.billing.money import amount_for, exact, meter_event_name, predict_time_ms, to_cents
from proxy.billing.store import Usage


@pytest.mark.parametrize(
    ("seconds", "ms", "amount"),
    [
        (1.25, 1250, "0.000625"),  # 1250.0 ms
        (1.250001, 1251, "0.0006255"),  # a started millisecond is billed whole
        (1.250999, 1251, "0.0006255"),
        (0.0125, 13, "0.0000065"),
        (0.0003, 1, "0.0000005"),  # a tiny batched prediction is not free (half-up said 0)
        (0, 0, "0"),
    ],
)
def test_every_started_millisecond_is_billed_and_the_amount_is_exact(
    seconds: float, ms: int, amount: str
) -> None:
    assert predict_time_ms(seconds) == ms
    assert exact(amount_for(Decimal("0.0005"), ms)) == amount


def test_a_float_that_binary_cannot_hold_exactly_still_rounds_as_written() -> None:
    # 0.1 is 0.1000000000000000055... as a binary float, a hair over 100 ms; the JSON said 0.1,
    # so it is 100 ms, not 101.
    assert predict_time_ms(0.1) == 100
    assert predict_time_ms("0.1") == 100


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


def test_meter_event_names_are_stripe_friendly_and_unchanged_for_plain_names() -> None:
    # A plain lowercase name keeps the meter it always had, so nothing at Stripe moves for it.
    assert meter_event_name("modelfolio/digits") == "modelfolio_digits_predict_ms"
    assert re.fullmatch(r"[a-z0-9_]+", meter_event_name("Some-One/fashion.mnist"))


def test_names_that_differ_only_in_punctuation_or_case_get_their_own_meters() -> None:
    names = ["a/x-y", "a/x.y", "a/x_y", "A/x-y", "a/xy", "a-x/y", "a/X-y", "a_x/y"]
    assert len({meter_event_name(name) for name in names}) == len(names)


_PART = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,12}", fullmatch=True)  # forward.segment


@given(st.tuples(_PART, _PART), st.tuples(_PART, _PART))
def test_two_different_model_names_never_share_a_meter(one: tuple[str, str], other: tuple[str, str]) -> None:
    if one != other:
        assert meter_event_name("/".join(one)) != meter_event_name("/".join(other))


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

"""Money, exactly: seconds of compute to whole milliseconds, milliseconds to an amount, an amount
to cents. Decimal throughout; a started millisecond is billed whole, and an amount is rounded
half-up once, when shown or invoiced; never a float.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, Inexact, InvalidOperation, localcontext
from typing import Any

CURRENCY = "usd"
CENT = Decimal("0.01")


def predict_time_ms(seconds: Any) -> int | None:
    """Seconds (as JSON gave them) to whole milliseconds, every started one counted (as AWS Lambda
    bills): rounding half-up would bill a prediction under half a millisecond (a small model,
    batched on a GPU) as nothing, and Stripe would never hear of it. None if not a duration.
    `str()` of a float is its shortest round-trip form, so this is the decimal that was sent."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float | str | Decimal):
        return None
    try:
        value = Decimal(str(seconds))
    except InvalidOperation:
        return None
    if not value.is_finite() or value < 0:
        return None
    return int((value * 1000).quantize(Decimal(1), rounding=ROUND_CEILING))


def amount_for(price_per_second: Decimal, ms: int) -> Decimal:
    with localcontext() as context:
        context.prec = 100
        context.traps[Inexact] = True  # an amount is exact or it is a bug
        return (price_per_second * ms).scaleb(-3)


def exact(amount: Decimal) -> str:
    """Fixed-point, without trailing zeros: '0.000625', '12', never '6.25E-4'."""
    return format(amount.normalize(), "f")


def to_cents(amount: Decimal) -> str:
    return str(amount.quantize(CENT, rounding=ROUND_HALF_UP))


def parse_price(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        return None
    return price if price.is_finite() and price >= 0 else None


def share_ms(ms: int, fraction: Decimal) -> int:
    """A fraction of some milliseconds, whole, half-up (what a cache hit is billed)."""
    return int((fraction * ms).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def meter_event_name(model: str) -> str:
    """The Stripe meter a model's usage goes to, e.g. 'modelfolio_digits_predict_ms'.

    One meter per model, never shared: lowercase letters and digits stay, the one '/' becomes '_',
    and any other (ASCII, as model names are) becomes '__' and its two hex digits: '-' is '__2d',
    'A' is '__41'. Read left to right, '__' then hex is always an escape and a lone '_' the slash,
    so no two model names share a meter; a plain lowercase name keeps the meter it always had."""
    owner, _, name = model.partition("/")
    return f"{_escape(owner)}_{_escape(name)}_predict_ms"


def _escape(part: str) -> str:
    return "".join(c if c in _PLAIN else f"__{ord(c):02x}" for c in part)


_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")

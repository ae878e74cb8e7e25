"""Money: the first time the proxy sees a prediction succeed, one ledger row (and, for a
customer, one Stripe meter event in the outbox) in one transaction; never twice, never floats.

Milliseconds are `predict_time` seconds rounded half-up; the amount is price per second x ms /
1000, exact, stored as a decimal string and rounded to the cent only when shown.
"""

from __future__ import annotations

import datetime
import logging
import re
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal, Inexact, InvalidOperation, localcontext
from typing import Any

from anyio import to_thread

from proxy.auth import Caller
from proxy.errors import RequestError
from proxy.forward import Upstream, segment
from proxy.ledger import Ledger, Usage
from proxy.logs import log_event

CURRENCY = "usd"
CENT = Decimal("0.01")


def predict_time_ms(seconds: Any) -> int | None:
    """Seconds (as JSON gave them) to whole milliseconds, half-up; None if not a duration.
    `str()` of a float is its shortest round-trip form, so this is the decimal that was sent."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float | str | Decimal):
        return None
    try:
        value = Decimal(str(seconds))
    except InvalidOperation:
        return None
    if not value.is_finite() or value < 0:
        return None
    return int((value * 1000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


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


def meter_event_name(model: str) -> str:
    """The Stripe meter a model's usage goes to, e.g. 'modelfolio_digits_predict_ms'."""
    return re.sub(r"[^a-z0-9]+", "_", model.lower()).strip("_") + "_predict_ms"


def summarize(rows: list[Usage]) -> dict[str, Any]:
    """A caller's totals, overall and per model."""
    by_model: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = by_model.setdefault(row.model, {"predictions": 0, "ms": 0, "amount": Decimal(0)})
        entry["predictions"] += 1
        entry["ms"] += row.predict_time_ms
        entry["amount"] += Decimal(row.amount)
    total = sum((entry["amount"] for entry in by_model.values()), Decimal(0))
    return {
        "predictions": len(rows),
        "predict_time_ms": sum(row.predict_time_ms for row in rows),
        "amount": to_cents(total),
        "amount_exact": exact(total),
        "currency": CURRENCY,
        "by_model": {
            model: {
                "predictions": entry["predictions"],
                "predict_time_ms": entry["ms"],
                "amount": to_cents(entry["amount"]),
                "amount_exact": exact(entry["amount"]),
            }
            for model, entry in sorted(by_model.items())
        },
    }


class Biller:
    def __init__(self, ledger: Ledger, upstream: Upstream, clock: Callable[[], datetime.datetime]) -> None:
        self._ledger = ledger
        self._upstream = upstream
        self._clock = clock
        self._prices: dict[str, Decimal] = {}

    def remember_price(self, model: str, model_object: Any) -> None:
        """Every model object the proxy passes along refreshes the cached price."""
        if isinstance(model_object, dict):
            price = parse_price(model_object.get("price_per_second"))
            if price is not None:
                self._prices[model] = price

    async def price_of(self, model: str) -> Decimal | None:
        if model not in self._prices:
            owner, _, name = model.partition("/")
            path = f"/v1/models/{segment(owner, 'model')}/{segment(name, 'model')}"
            reply = await self._upstream.send("GET", path)
            if reply.ok:
                self.remember_price(model, reply.json())
        return self._prices.get(model)

    async def bill(self, prediction: Any, caller: Caller, model: str | None = None) -> Any:
        """Bills `prediction` if it succeeded (once, whatever the number of calls) and adds
        `metrics.predict_time_ms` and `billing` to it. Anything else passes unchanged."""
        if not isinstance(prediction, dict) or prediction.get("status") != "succeeded":
            return prediction
        prediction_id = prediction.get("id")
        if not isinstance(prediction_id, str):
            return prediction
        stored = await to_thread.run_sync(self._ledger.usage_for, prediction_id)
        if stored is None:
            stored = await self._record(prediction, prediction_id, caller, model)
        if stored is not None:
            _annotate(prediction, stored)
        return prediction

    async def _record(
        self, prediction: dict[str, Any], prediction_id: str, caller: Caller, model: str | None
    ) -> Usage | None:
        model = prediction.get("model") if isinstance(prediction.get("model"), str) else model
        metrics = prediction.get("metrics")
        ms = predict_time_ms(metrics.get("predict_time") if isinstance(metrics, dict) else None)
        if model is None or ms is None:
            log_event(
                "billing_skipped",
                level=logging.ERROR,
                prediction_id=prediction_id,
                reason="no model or no metrics.predict_time in a succeeded prediction",
            )
            return None
        try:
            price = await self.price_of(model)
        except RequestError:
            price = None
        if price is None:
            # Not billed yet, so the next poll tries again.
            log_event(
                "billing_deferred",
                level=logging.WARNING,
                prediction_id=prediction_id,
                model=model,
                reason="price_per_second unavailable",
            )
            return None
        usage = Usage(
            prediction_id=prediction_id,
            caller=caller.id,
            stripe_customer=caller.customer,
            model=model,
            version=prediction.get("version") if isinstance(prediction.get("version"), str) else None,
            predict_time_ms=ms,
            price_per_second=exact(price),
            amount=exact(amount_for(price, ms)),
            created_at=self._clock().isoformat(timespec="microseconds"),
        )
        stored, inserted = await to_thread.run_sync(self._ledger.record_usage, usage, meter_event_name(model))
        if inserted:
            log_event(
                "billed",
                prediction_id=prediction_id,
                caller=caller.kind,
                model=model,
                predict_time_ms=ms,
                amount=stored.amount,
                billed_to=caller.billed_to,
            )
        return stored


def _annotate(prediction: dict[str, Any], usage: Usage) -> None:
    metrics = prediction.get("metrics")
    if not isinstance(metrics, dict):
        metrics = prediction["metrics"] = {}
    metrics["predict_time_ms"] = usage.predict_time_ms
    prediction["billing"] = {
        "amount": usage.amount,
        "currency": CURRENCY,
        "billed_to": "customer" if usage.stripe_customer is not None else "demo",
    }

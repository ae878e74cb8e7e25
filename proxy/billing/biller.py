"""The first time the proxy sees a prediction succeed: one usage row (and, for a customer, one
Stripe meter event in the outbox) in one transaction; never twice, never floats.

Milliseconds are `predict_time` seconds rounded half-up; the amount is price per second x ms /
1000, exact, stored as a decimal string and rounded to the cent only when shown.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from anyio import to_thread

from proxy.auth import Caller
from proxy.billing.money import (
    CURRENCY,
    amount_for,
    exact,
    meter_event_name,
    parse_price,
    predict_time_ms,
    to_cents,
)
from proxy.billing.store import Usage, UsageStore
from proxy.errors import PaymentRequired, RequestError, Unavailable
from proxy.forward import Upstream, segment
from proxy.logs import log_event

FACTS_TTL_S = 30.0  # a new price or version is billed and cached by within this after a reload


@dataclass(frozen=True)
class ModelFacts:
    price: Decimal  # USD per second of predict_time
    version: str | None  # the latest version, which new requests run on
    seen_at: float  # monotonic


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
    def __init__(
        self,
        store: UsageStore,
        upstream: Upstream,
        clock: Callable[[], datetime.datetime],
        charged: Callable[[str, str], Decimal | None] | None = None,
    ) -> None:
        """`charged(customer, event_name)`: the cents per ms a customer's subscription charges on
        a meter (blocking, from the ledger); None: customers pay the model server's price."""
        self._store = store
        self._upstream = upstream
        self._clock = clock
        self._charged = charged
        self._models: dict[str, ModelFacts] = {}

    def remember_model(self, model: str, model_object: Any) -> None:
        """Every model object the proxy passes along refreshes what it knows of the model."""
        if isinstance(model_object, dict):
            price = parse_price(model_object.get("price_per_second"))
            latest = model_object.get("latest_version")
            version = latest.get("id") if isinstance(latest, dict) else None
            if price is not None:
                self._models[model] = ModelFacts(
                    price, version if isinstance(version, str) else None, time.monotonic()
                )

    async def facts(self, model: str) -> ModelFacts | None:
        """The model's price and latest version, as the model server said within FACTS_TTL_S."""
        known = self._models.get(model)
        if known is None or time.monotonic() - known.seen_at > FACTS_TTL_S:
            owner, _, name = model.partition("/")
            path = f"/v1/models/{segment(owner, 'model')}/{segment(name, 'model')}"
            reply = await self._upstream.send("GET", path)
            if reply.ok:
                self.remember_model(model, reply.json())
        return self._models.get(model, known)

    async def price_of(self, model: str) -> Decimal | None:
        facts = await self.facts(model)
        return facts.price if facts else None

    async def price_for(self, caller: Caller, model: str) -> Decimal | None:
        """USD per second of `model` for `caller`: what a customer's subscription charges (none:
        PaymentRequired, as a meter event no price charges would be usage given away), else the
        model server's price; None when that cannot be read now."""
        if caller.customer is not None and self._charged is not None:
            cents_per_ms = await to_thread.run_sync(self._charged, caller.customer, meter_event_name(model))
            if cents_per_ms is None:
                raise PaymentRequired(
                    f"your subscription has no price for {model}, so this prediction cannot be billed "
                    "and its output is not shown; ask the owner of this portfolio"
                )
            return cents_per_ms * 10  # cents per ms x 1000 ms per s / 100 cents per USD
        try:
            return await self.price_of(model)
        except RequestError:
            return None

    async def bill(self, prediction: Any, caller: Caller, model: str | None = None) -> Any:
        """Bills `prediction` if it succeeded (once, whatever the number of calls) and adds
        `metrics.predict_time_ms` and `billing` to it. Anything else passes unchanged."""
        if not isinstance(prediction, dict) or prediction.get("status") != "succeeded":
            return prediction
        prediction_id = prediction.get("id")
        if not isinstance(prediction_id, str):
            return prediction
        stored = await to_thread.run_sync(self._store.usage_for, prediction_id)
        if stored is None:
            stored = await self._record(prediction, prediction_id, caller, model)
        if stored is not None:
            annotate(prediction, stored)
        return prediction

    async def record(self, usage: Usage) -> Usage:
        """Writes a usage line (once per prediction id); returns the one stored."""
        stored, inserted = await to_thread.run_sync(
            self._store.record_usage, usage, meter_event_name(usage.model)
        )
        if inserted:
            log_event(
                "billed",
                prediction_id=usage.prediction_id,
                caller=usage.caller.split(":", 1)[0],
                model=usage.model,
                kind=usage.kind,
                predict_time_ms=stored.predict_time_ms,
                amount=stored.amount,
                billed_to="customer" if stored.stripe_customer else "demo",
            )
        return stored

    def usage_line(
        self, prediction: dict[str, Any], caller: Caller, model: str, ms: int, price: Decimal
    ) -> Usage:
        return Usage(
            prediction_id=prediction["id"],
            caller=caller.id,
            stripe_customer=caller.customer,
            model=model,
            version=prediction.get("version") if isinstance(prediction.get("version"), str) else None,
            predict_time_ms=ms,
            price_per_second=exact(price),
            amount=exact(amount_for(price, ms)),
            created_at=self._clock().isoformat(timespec="microseconds"),
            key_id=caller.key_id,
        )

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
        price = await self.price_for(caller, model)
        if price is None:
            # Never hand out an output that is not billed: the poller and the model server's
            # completion event get a 503 and come back, and the first that finds a price bills it.
            log_event(
                "billing_deferred",
                level=logging.WARNING,
                prediction_id=prediction_id,
                model=model,
                reason="price_per_second unavailable",
            )
            raise Unavailable(
                f"prediction {prediction_id} has finished, but its price cannot be read right now, so "
                f"it cannot be billed yet; GET /v1/predictions/{prediction_id} again in a few seconds",
                retry_after=5,
            )
        return await self.record(self.usage_line(prediction, caller, model, ms, price))


def annotate(prediction: dict[str, Any], usage: Usage) -> None:
    metrics = prediction.get("metrics")
    if not isinstance(metrics, dict):
        metrics = prediction["metrics"] = {}
    metrics["predict_time_ms"] = usage.predict_time_ms
    prediction["billing"] = {
        "amount": usage.amount,
        "currency": CURRENCY,
        "billed_to": "customer" if usage.stripe_customer is not None else "demo",
    }

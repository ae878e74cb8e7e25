"""`python -m proxy billing sync-catalog`: one Billing Meter and one monthly metered price per
model, created only when missing, so running it twice changes nothing.

The models and their prices come from the inference server's `GET /v1/models`, the same answer
the proxy already reads prices from (`proxy.billing.parse_price`), so no second copy of the
manifests' rules lives here.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import stripe

from proxy.billing import CURRENCY, exact, meter_event_name, parse_price
from proxy.errors import ProxyError
from proxy.forward import Upstream

MAX_DECIMALS = 12  # https://docs.stripe.com/api/prices/create#create_price-unit_amount_decimal


@dataclass(frozen=True)
class Product:
    model: str  # owner/name
    price_per_second: Decimal

    @property
    def event_name(self) -> str:
        return meter_event_name(self.model)

    @property
    def lookup_key(self) -> str:
        return price_lookup_key(self.model)

    @property
    def cents_per_ms(self) -> str:
        """USD per second x 100 cents / 1000 ms, exact; Stripe takes at most 12 decimals."""
        cents = exact(self.price_per_second * 100 / 1000)
        if -Decimal(cents).as_tuple().exponent > MAX_DECIMALS:  # type: ignore[operator]
            raise ProxyError(f"{self.model}: {cents} cents per ms has more than {MAX_DECIMALS} decimals")
        return cents


def price_lookup_key(model: str) -> str:
    """The metered price of `model` (owner/name), as checkout finds it: Stripe prices are
    immutable, so a changed price is a new Price that takes over this key."""
    return f"{meter_event_name(model)}_{CURRENCY}_month"


async def models(upstream: Upstream) -> list[Product]:
    found, path = [], "/v1/models"
    while path:
        reply = await upstream.send("GET", path)
        if not reply.ok:
            raise ProxyError(f"the model server answered {reply.status} to GET /v1/models")
        page = reply.json()
        for item in page.get("results", []):
            price = parse_price(item.get("price_per_second"))
            if price is None:
                raise ProxyError(
                    f"model {item.get('owner')}/{item.get('name')} has no valid price_per_second"
                )
            found.append(Product(f"{item['owner']}/{item['name']}", price))
        following = urlsplit(page.get("next") or "")
        path = following.path + (f"?{following.query}" if following.query else "")
    return found


async def sync(client: stripe.StripeClient, products: list[Product]) -> list[str]:
    """Returns one line per model saying what exists now and what was created."""
    meters = {}
    async for meter in (
        await client.v1.billing.meters.list_async({"status": "active", "limit": 100})
    ).auto_paging_iter():
        meters[meter.event_name] = meter
    report = []
    for product in products:
        meter = meters.get(product.event_name)
        made = []
        if meter is None:
            meter = await client.v1.billing.meters.create_async(
                {
                    "display_name": f"{product.model} predict time (ms)",
                    "event_name": product.event_name,
                    "default_aggregation": {"formula": "sum"},
                    "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
                    "value_settings": {"event_payload_key": "value"},
                },
                options={"idempotency_key": f"modelfolio-meter-{product.event_name}"},
            )
            made.append("meter")
        price = await _price(client, product, meter.id)
        if price is None:
            price = await client.v1.prices.create_async(_price_params(product, meter.id))
            made.append("price")
        report.append(
            f"{product.model}: meter {meter.id} ({product.event_name}), price {price.id} "
            f"{product.cents_per_ms} cents/ms" + (f" [created {', '.join(made)}]" if made else " [unchanged]")
        )
    return report


async def _price(client: stripe.StripeClient, product: Product, meter_id: str) -> Any:
    """The live price under the model's lookup key, if it still matches price and meter; a
    changed price gets a new Price that takes over the key (Stripe prices are immutable)."""
    listed = await client.v1.prices.list_async({"lookup_keys": [product.lookup_key], "active": True})
    for price in listed.data:
        same_amount = Decimal(str(price.unit_amount_decimal)) == Decimal(product.cents_per_ms)
        if same_amount and price.recurring and price.recurring.meter == meter_id:
            return price
    return None


def _price_params(product: Product, meter_id: str) -> dict[str, Any]:
    return {
        "currency": CURRENCY,
        "unit_amount_decimal": product.cents_per_ms,
        "product_data": {"name": product.model},
        "recurring": {"interval": "month", "usage_type": "metered", "meter": meter_id},
        "lookup_key": product.lookup_key,
        "transfer_lookup_key": True,
        "nickname": f"{product.model} per millisecond of predict time",
    }

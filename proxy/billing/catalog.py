"""`python -m proxy billing sync-catalog`: one Billing Meter and one monthly metered price per
model, created only when missing, so running it twice changes nothing; then every customer's
subscription gets an item for each model it lacks (a metered item costs nothing until used), and
moves to a model's new price where Stripe bills the usage so far at the old one (flexible billing
mode; a classic subscription keeps its price, as moving it would leave its usage so far unbilled:
https://docs.stripe.com/billing/subscriptions/usage-based/manage-billing-setup).

The models and their prices come from the inference server's `GET /v1/models`, the same answer
the proxy already reads prices from (`proxy.billing.parse_price`), so no second copy of the
manifests' rules lives here. Every create carries an idempotency key, so a retried run never
makes a second meter, price or item.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import stripe
from stripe.params import PriceCreateParams

from proxy.billing.money import CURRENCY, exact, meter_event_name, parse_price
from proxy.errors import CommandError
from proxy.forward import Upstream

MAX_DECIMALS = 12  # https://docs.stripe.com/api/prices/create#create_price-unit_amount_decimal
EVENT_NAME_MAX = (
    100  # https://docs.stripe.com/api/billing/meter-event/create#create_billing_meter_event-event_name
)
LOOKUP_SUFFIX = f"_predict_ms_{CURRENCY}_month"  # every model's price_lookup_key ends so


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
            raise CommandError(f"{self.model}: {cents} cents per ms has more than {MAX_DECIMALS} decimals")
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
            raise CommandError(f"the model server answered {reply.status} to GET /v1/models")
        page = reply.json()
        for item in page.get("results", []):
            price = parse_price(item.get("price_per_second"))
            if price is None:
                raise CommandError(
                    f"model {item.get('owner')}/{item.get('name')} has no valid price_per_second"
                )
            product = Product(f"{item['owner']}/{item['name']}", price)
            if len(product.event_name) > EVENT_NAME_MAX:
                raise CommandError(
                    f"model {product.model}: its meter name {product.event_name} is longer than the "
                    f"{EVENT_NAME_MAX} characters Stripe takes; use a shorter model name"
                )
            found.append(product)
        following = urlsplit(page.get("next") or "")
        path = following.path + (f"?{following.query}" if following.query else "")
    return found


async def sync(client: stripe.StripeClient, products: list[Product]) -> list[str]:
    """Returns one line per model saying what exists now and what was created, then one per
    subscription changed."""
    meters = {}
    async for meter in (
        await client.v1.billing.meters.list_async({"status": "active", "limit": 100})
    ).auto_paging_iter():
        meters[meter.event_name] = meter
    report = []
    current: dict[str, tuple[Product, str]] = {}  # event name -> (product, its current price id)
    by_meter: dict[str, str] = {}  # meter id -> event name
    for product in products:
        found = meters.get(product.event_name)
        made = []
        if found is not None:
            meter = found
        else:
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
        price, holder = await _price(client, product, meter.id)
        if price is None:
            # The key names what the new price replaces: a price changed back to an earlier amount
            # within a day still gets a price of its own, not the replay of the first one.
            key = (
                f"modelfolio-price-{product.lookup_key}-{product.cents_per_ms}-{meter.id}-{holder or 'first'}"
            )
            price = await client.v1.prices.create_async(
                _price_params(product, meter.id), options={"idempotency_key": key}
            )
            made.append("price")
        current[product.event_name] = (product, price.id)
        by_meter[meter.id] = product.event_name
        report.append(
            f"{product.model}: meter {meter.id} ({product.event_name}), price {price.id} "
            f"{product.cents_per_ms} cents/ms" + (f" [created {', '.join(made)}]" if made else " [unchanged]")
        )
    by_meter.update({meter.id: name for name, meter in meters.items()})
    return report + await _subscriptions(client, current, by_meter)


async def _price(client: stripe.StripeClient, product: Product, meter_id: str) -> tuple[Any, str | None]:
    """(the live price under the model's lookup key if it still matches price and meter, the id
    of the price holding the key); a changed price gets a new Price that takes over the key
    (Stripe prices are immutable)."""
    listed = await client.v1.prices.list_async({"lookup_keys": [product.lookup_key], "active": True})
    for price in listed.data:
        same_amount = Decimal(str(price.unit_amount_decimal)) == Decimal(product.cents_per_ms)
        if same_amount and price.recurring and price.recurring.meter == meter_id:
            return price, price.id
    return None, listed.data[0].id if listed.data else None


async def current_prices(client: stripe.StripeClient) -> dict[str, str]:
    """Every model's current price at Stripe: lookup key -> price id (what checkout sells)."""
    found = {}
    async for price in (await client.v1.prices.list_async({"active": True, "limit": 100})).auto_paging_iter():
        key = price.lookup_key or ""
        if key.endswith(LOOKUP_SUFFIX) and price.recurring and price.recurring.usage_type == "metered":
            found[key] = price.id
    return found


async def _subscriptions(
    client: stripe.StripeClient, current: dict[str, tuple[Product, str]], meters: dict[str, str]
) -> list[str]:
    """Every subscription with an item on one of our meters gets an item for each model it
    lacks, and moves an item to its model's current price where that bills fairly."""
    lines = []
    listed = await client.v1.subscriptions.list_async({"limit": 100})  # not the canceled ones
    async for subscription in listed.auto_paging_iter():
        if subscription.status in ("canceled", "incomplete_expired"):
            continue
        have = {}
        for item in subscription["items"].data:
            recurring = item.price.recurring
            if recurring is not None and recurring.usage_type == "metered" and recurring.meter in meters:
                have[meters[recurring.meter]] = item
        if not have:
            continue  # not a modelfolio subscription
        who = f"{subscription.id} ({subscription.customer})"
        flexible = subscription.billing_mode is not None and subscription.billing_mode.type == "flexible"
        for event_name, (product, price_id) in current.items():
            item = have.get(event_name)
            if item is None:
                await client.v1.subscription_items.create_async(
                    {"subscription": subscription.id, "price": price_id},
                    options={"idempotency_key": f"modelfolio-item-{subscription.id}-{price_id}"},
                )
                lines.append(f"{who}: added {product.model}")
            elif item.price.id != price_id and flexible:
                await client.v1.subscription_items.update_async(
                    item.id,
                    {"price": price_id},
                    options={"idempotency_key": f"modelfolio-move-{item.id}-{price_id}"},
                )
                lines.append(f"{who}: moved {product.model} to {product.cents_per_ms} cents/ms")
            elif item.price.id != price_id:
                lines.append(
                    f"{who}: kept {product.model} at its old price (classic billing mode: moving it now "
                    "would leave this period's usage unbilled; move it at renewal)"
                )
    return lines


def _price_params(product: Product, meter_id: str) -> PriceCreateParams:
    return {
        "currency": CURRENCY,
        # A fixed-point string, not a Decimal: the SDK sends str(Decimal), which writes amounts
        # below a millionth of a cent as "1E-7", and Stripe wants digits.
        "unit_amount_decimal": product.cents_per_ms,  # type: ignore[typeddict-item]
        "product_data": {"name": product.model},
        "recurring": {"interval": "month", "usage_type": "metered", "meter": meter_id},
        "lookup_key": product.lookup_key,
        "transfer_lookup_key": True,
        # Subscription webhooks carry the price: these map its item to a model without a call.
        "metadata": {"modelfolio_model": product.model, "modelfolio_event_name": product.event_name},
        "nickname": f"{product.model} per millisecond of predict time",
    }

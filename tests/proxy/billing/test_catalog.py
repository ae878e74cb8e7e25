"""`billing sync-catalog` makes each price once, even when the owner runs it again while Stripe is
still working on a create whose answer never came back."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
import stripe

from devtools.teststripe.server import State
from proxy.billing import stripe_api
from proxy.billing.catalog import Product, sync
from proxy.config import BillingConfig
from tests.support.billing import MODEL, wait_until


def run_sync(url: str, *, timeout_s: float = 5.0) -> list[str]:
    async def run() -> list[str]:
        billing = BillingConfig(stripe_api_base=url, stripe_meter_events_base=url, timeout_s=timeout_s)
        connection = stripe_api.connect("sk_test_owner", billing)
        try:
            return await sync(connection.client, [Product(MODEL, Decimal("0.0005"))])
        finally:
            await connection.aclose()

    return asyncio.run(run())


def test_a_rerun_while_a_lost_price_create_is_still_running_makes_no_second_price(
    stripe_server: tuple[State, str],
) -> None:
    state, url = stripe_server
    state.faults.set(paths=("/v1/prices",), hang_s=5.0)  # wide: the rerun surely lands inside it
    state.faults.force("", "timeout")  # the list answers; the create hangs past the client's timeout
    with pytest.raises(stripe.APIConnectionError):
        run_sync(url, timeout_s=0.3)
    with pytest.raises(stripe.StripeError) as refused:
        run_sync(url)  # at once, while Stripe still works on the first create
    assert refused.value.http_status == 409  # Stripe: that create's idempotency key is in use
    wait_until(lambda: state.of("price") and not state.in_flight, "the first create to finish")
    assert run_sync(url)[0].endswith("[unchanged]")
    assert len(state.of("price")) == 1

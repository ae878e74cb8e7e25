"""The test Stripe answers the real `stripe` SDK as Stripe would: meters, metered prices, meter
events deduplicated by identifier, summaries, idempotent replays, and each injected fault."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import stripe

from devtools.teststripe.server import create_app
from tests.support.servers import serve

NOW = 1_800_000_000  # a whole minute


@pytest.fixture
def clock() -> list[float]:
    return [float(NOW)]


@pytest.fixture
def server(clock: list[float]) -> Iterator[tuple[Any, str]]:
    app = create_app(seed=7, clock=lambda: clock[0])
    with serve(app) as url:
        yield app.state.stripe, url


def sdk(url: str, key: str = "sk_test_123", timeout: float = 5.0) -> stripe.StripeClient:
    return stripe.StripeClient(
        key,
        base_addresses={"api": url, "meter_events": url},
        http_client=stripe.RequestsClient(timeout=timeout),
    )


def meter_and_customer(client: stripe.StripeClient, event_name: str = "digits_ms") -> tuple[str, str]:
    meter = client.v1.billing.meters.create(
        {
            "display_name": "Digits",
            "event_name": event_name,
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )
    customer = client.v1.customers.create({"email": "a@example.com"})
    return meter.id, customer.id


def event(customer: str, identifier: str, value: str = "10", ts: int = NOW, name: str = "digits_ms") -> dict:
    return {
        "event_name": name,
        "payload": {"stripe_customer_id": customer, "value": value},
        "identifier": identifier,
        "timestamp": ts,
    }


def total(client: stripe.StripeClient, meter: str, customer: str, start: int = NOW - 3600) -> Any:
    summaries = client.v1.billing.meters.event_summaries.list(
        meter, {"customer": customer, "start_time": start, "end_time": NOW + 3600}
    )
    return summaries.data[0].aggregated_value


def test_a_metered_price_on_a_meter_bills_the_sum_of_its_events_per_customer_and_window(server) -> None:
    _state, url = server
    client = sdk(url)
    meter, alice = meter_and_customer(client)
    bob = client.v1.customers.create({"name": "Bob"}).id
    price = client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount_decimal": "0.05",
            "product_data": {"name": "Digits"},
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter},
            "lookup_key": "digits_monthly",
        }
    )
    assert price.unit_amount_decimal == Decimal("0.05") and price.recurring.meter == meter
    found = client.v1.prices.list({"lookup_keys": ["digits_monthly"], "active": True})
    assert [p.id for p in found.data] == [price.id]

    client.v1.billing.meter_events.create(event(alice, "p1", "1250"))
    client.v1.billing.meter_events.create(event(alice, "p2", "7", ts=NOW - 7200))  # outside window
    client.v1.billing.meter_events.create(event(bob, "p3", "5"))
    assert total(client, meter, alice) == 1250
    assert total(client, meter, alice, start=NOW - 7200) == 1257
    assert total(client, meter, bob) == 5


def test_a_second_event_with_the_same_identifier_is_refused_for_a_day(server, clock) -> None:
    _state, url = server
    client = sdk(url)
    meter, alice = meter_and_customer(client)
    client.v1.billing.meter_events.create(event(alice, "pred_1"))
    clock[0] += 86399
    with pytest.raises(
        stripe.InvalidRequestError, match="An event already exists with identifier pred_1"
    ) as info:
        client.v1.billing.meter_events.create(event(alice, "pred_1", ts=int(clock[0])))
    assert info.value.http_status == 400 and info.value.headers["stripe-should-retry"] == "false"
    assert info.value.code == "duplicate_meter_event"  # Stripe's documented code
    assert total(client, meter, alice) == 10


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"timestamp": NOW - 35 * 86400 - 1}, "timestamp"),
        ({"timestamp": NOW + 301}, "timestamp"),
        ({"payload": {"stripe_customer_id": "cus_x", "value": "1.5"}}, "payload[value]"),
        ({"identifier": "x" * 101}, "identifier"),
    ],
)
def test_an_event_outside_stripes_rules_is_a_400_naming_the_param(server, change, param) -> None:
    _state, url = server
    client = sdk(url)
    meter_and_customer(client)
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.billing.meter_events.create({**event("cus_x", "p1"), **change})
    assert info.value.http_status == 400 and (param == "identifier" or info.value.param == param)


def test_an_unknown_customer_is_accepted_then_reported_not_summed(server) -> None:
    state, url = server
    client = sdk(url)
    _meter, _alice = meter_and_customer(client)
    client.v1.billing.meter_events.create(event("cus_nobody", "p1"))
    (report,) = state.error_reports
    assert {"code": "meter_event_customer_not_found", "identifier": "p1"}.items() <= report.items()


def test_event_names_are_unique_among_active_meters(server) -> None:
    _state, url = server
    client = sdk(url)
    meter, _ = meter_and_customer(client)
    with pytest.raises(stripe.InvalidRequestError, match="already exists"):
        meter_and_customer(client)
    client.v1.billing.meters.deactivate(meter)
    assert meter_and_customer(client)[0] != meter
    assert [m.id for m in client.v1.billing.meters.list({"status": "active"}).data] != [meter]


def test_only_a_test_secret_key_gets_in(server) -> None:
    _state, url = server
    with pytest.raises(stripe.AuthenticationError):
        sdk(url, key="sk_live_123").v1.customers.create({})
    with pytest.raises(stripe.AuthenticationError):
        sdk(url, key="pk_test_123").v1.customers.create({})


def test_an_idempotency_key_replays_the_first_answer_even_a_500(server) -> None:
    state, url = server
    client = sdk(url)
    meter, alice = meter_and_customer(client)
    options = {"idempotency_key": "k1"}
    first = client.v1.billing.meter_events.create(event(alice, "p1"), options=options)
    again = client.v1.billing.meter_events.create(event(alice, "p1"), options=options)
    assert (
        again.identifier == first.identifier
        and again.last_response.headers.get("idempotent-replayed") is None
    )
    assert total(client, meter, alice) == 10
    with pytest.raises(stripe.IdempotencyError):
        client.v1.billing.meter_events.create(event(alice, "p2"), options=options)

    state.faults.force("error")
    with pytest.raises(stripe.APIError) as info:
        client.v1.billing.meter_events.create(event(alice, "p3"), options={"idempotency_key": "k3"})
    assert info.value.http_status == 500
    with pytest.raises(stripe.APIError):  # replayed, not executed
        client.v1.billing.meter_events.create(event(alice, "p3"), options={"idempotency_key": "k3"})
    client.v1.billing.meter_events.create(event(alice, "p3"), options={"idempotency_key": "k3-b"})
    assert total(client, meter, alice) == 20


def test_a_rate_limit_is_a_429_and_nothing_is_stored(server) -> None:
    state, url = server
    client = sdk(url)
    meter, alice = meter_and_customer(client)
    state.faults.force("rate_limit")
    with pytest.raises(stripe.RateLimitError):
        client.v1.billing.meter_events.create(event(alice, "p1"), options={"idempotency_key": "k"})
    client.v1.billing.meter_events.create(event(alice, "p1"), options={"idempotency_key": "k"})
    assert total(client, meter, alice) == 10


def test_a_hang_past_the_clients_timeout_is_a_connection_error_and_the_event_lands_anyway(server) -> None:
    state, url = server
    meter, alice = meter_and_customer(sdk(url))
    state.faults.set(hang_s=0.5)
    state.faults.force("timeout")
    with pytest.raises(stripe.APIConnectionError):
        sdk(url, timeout=0.1).v1.billing.meter_events.create(event(alice, "p1"))
    # The hung call still runs on the server: whichever lands first, there is one event.
    refusal = None
    while refusal is None:
        try:
            sdk(url).v1.billing.meter_events.create(event(alice, "p1"))
        except stripe.InvalidRequestError as error:
            refusal = str(error)
    assert "already exists" in refusal
    assert total(sdk(url), meter, alice) == 10


@pytest.mark.parametrize("mode", ["drop", "500"])
def test_a_lost_response_after_storing_leaves_the_client_unsure_but_stripe_billed(server, mode) -> None:
    state, url = server
    client = sdk(url)
    meter, alice = meter_and_customer(client)
    state.faults.set(lose_mode=mode)
    state.faults.force("lose_response")
    with pytest.raises(stripe.APIConnectionError if mode == "drop" else stripe.APIError):
        client.v1.billing.meter_events.create(event(alice, "p1"), options={"idempotency_key": "k"})
    replay = client.v1.billing.meter_events.create(event(alice, "p1"), options={"idempotency_key": "k"})
    assert replay.identifier == "p1"
    assert total(client, meter, alice) == 10


def test_random_faults_are_seeded_and_apply_only_to_the_chosen_paths(server) -> None:
    state, url = server
    state.faults.set(seed=3, error=1.0)
    client = sdk(url)
    _meter, alice = meter_and_customer(client)  # not a faulted path
    with pytest.raises(stripe.APIError):
        client.v1.billing.meter_events.create(event(alice, "p1"))
    state.faults.set(error=0.5, seed=3)
    first = [state.faults.draw("/v1/billing/meter_events") for _ in range(20)]
    state.faults.set(seed=3)
    assert [state.faults.draw("/v1/billing/meter_events") for _ in range(20)] == first
    assert {None, "error"} == set(first)

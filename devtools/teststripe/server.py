"""TEST SUPPORT ONLY: a small, stateful, in-memory Stripe for the endpoints modelfolio uses, driven
by the real `stripe` SDK over HTTP (`StripeClient(key, base_addresses={"api": url,
"meter_events": url})`). Never used in production. Each behaviour names the Stripe page it follows.

    app = create_app(seed=1)
    app.state.stripe.faults.set(error=0.3, timeout=0.05, hang_s=0.3)  # or POST /_test/faults
    python -m devtools.teststripe --port 12111                                 # for the demo
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from devtools.teststripe import checkout, connect, invoices

DAY = 86400
IDENTIFIER_WINDOW_S = DAY  # "uniqueness within a rolling period of at least 24 hours"
IDEMPOTENCY_WINDOW_S = DAY  # https://docs.stripe.com/api/idempotent_requests: "at least 24 hours"


class StripeError(Exception):
    """An error answer: https://docs.stripe.com/api/errors (type, code, message, param)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers or {}
        self.body: dict[str, Any] = {"type": type, "message": message}
        if code:
            self.body["code"] = code
        if param:
            self.body["param"] = param


@dataclass
class Faults:
    """Each call draws once from a seeded RNG: 429, then 500, then hang, then lost response."""

    rate_limit: float = 0.0
    error: float = 0.0
    timeout: float = 0.0
    lose_response: float = 0.0
    lose_mode: str = "drop"  # "drop": cut the connection mid-body; "500": answer a bare 500
    hang_s: float = 1.0
    # Prefixes that faults apply to: v1 meter events, v2 meter event sessions and the v2 stream.
    paths: tuple[str, ...] = ("/v1/billing/meter_events", "/v2/billing/meter_event")
    forced: list[str] = field(default_factory=list)  # the next calls' faults, in order
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def set(self, seed: int | None = None, **values: Any) -> None:
        for name, value in values.items():
            if not hasattr(self, name) or name in ("forced", "rng"):
                raise TypeError(f"no fault setting {name!r}")
            setattr(self, name, tuple(value) if name == "paths" else value)
        if seed is not None:
            self.rng = random.Random(seed)

    def force(self, *kinds: str) -> None:
        self.forced.extend(kinds)

    def draw(self, path: str) -> str | None:
        if not any(path.startswith(prefix) for prefix in self.paths):
            return None
        if self.forced:
            return self.forced.pop(0) or None
        roll, edge = self.rng.random(), 0.0
        for kind in ("rate_limit", "error", "timeout", "lose_response"):
            edge += getattr(self, kind)
            if roll < edge:
                return kind
        return None


@dataclass
class State:
    clock: Callable[[], float] = time.time
    faults: Faults = field(default_factory=Faults)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> object, any kind
    events: list[dict[str, Any]] = field(default_factory=list)
    identifiers: dict[str, float] = field(default_factory=dict)  # identifier -> first seen
    idempotency: dict[str, tuple[str, int, bytes, float]] = field(default_factory=dict)
    in_flight: set[str] = field(default_factory=set)
    error_reports: list[dict[str, Any]] = field(default_factory=list)
    # Stripe's words for a duplicate identifier; a test may reword them, as Stripe may: code that
    # reads the error's code, not its text, keeps working.
    duplicate_message: str = "An event already exists with identifier {identifier}."
    webhooks: checkout.Webhooks = field(default_factory=checkout.Webhooks)
    calls: dict[str, int] = field(default_factory=dict)  # "POST /v1/..." and fault kinds -> count
    links: dict[str, dict[str, Any]] = field(default_factory=dict)  # Account Link token -> its link
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_test{next(self._ids):08d}"

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects.values() if o["object"] == kind]

    def get(self, kind: str, object_id: str, param: str = "id") -> dict[str, Any]:
        found = self.objects.get(object_id)
        if found is None or found["object"] != kind:
            # https://docs.stripe.com/error-codes#resource-missing
            raise StripeError(
                404, f"No such {kind.split('.')[-1]}: '{object_id}'", code="resource_missing", param=param
            )
        return found

    def aggregated(self, meter_id: str, customer: str, start: int, end: int) -> Decimal:
        meter = self.get("billing.meter", meter_id)
        return sum(
            (
                Decimal(e["payload"][meter["value_settings"]["event_payload_key"]])
                for e in self.events
                if e["event_name"] == meter["event_name"]
                and start <= e["timestamp"] < end
                and e["payload"].get(meter["customer_mapping"]["event_payload_key"]) == customer
            ),
            Decimal(0),
        )

    def count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1


def form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """`a[b][0]=x` as the SDK encodes it (https://docs.stripe.com/api/expanding_objects style)."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+|\[\]", key)
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        last = parts[-1] if parts[-1] != "[]" else str(len(node))
        node[last] = value
    return _lists(root)


def _lists(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _lists(v) for k, v in node.items()}
        if node and all(k.isdigit() for k in node):
            return [node[k] for k in sorted(node, key=int)]
    return node


def _required(params: dict[str, Any], name: str) -> Any:
    if params.get(name) in (None, ""):
        raise StripeError(400, f"Missing required param: {name}.", code="parameter_missing", param=name)
    return params[name]


def _integer(params: dict[str, Any], name: str, default: int | None = None) -> int:
    value = params.get(name, default)
    if value is None:
        _required(params, name)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise StripeError(
            400, f"Invalid integer: {value}", code="parameter_invalid_integer", param=name
        ) from None


def _listing(items: list[dict[str, Any]], params: dict[str, Any], url: str) -> dict[str, Any]:
    # https://docs.stripe.com/api/pagination: limit (1..100, default 10), starting_after, has_more
    limit = min(max(_integer(params, "limit", 10), 1), 100)
    after = params.get("starting_after")
    if after:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    return {"object": "list", "data": items[:limit], "has_more": len(items) > limit, "url": url}


# --- endpoints: (state, params, path params) -> JSON object ---------------------------------------


def create_customer(s: State, p: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    # https://docs.stripe.com/api/customers/create
    customer = {
        "id": s.new_id("cus"),
        "object": "customer",
        "created": int(s.clock()),
        "email": p.get("email"),
        "name": p.get("name"),
        "metadata": p.get("metadata", {}),
        "livemode": False,
    }
    s.objects[customer["id"]] = customer
    return customer


def create_product(s: State, p: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    # https://docs.stripe.com/api/products/create
    product = {
        "id": s.new_id("prod"),
        "object": "product",
        "active": True,
        "name": _required(p, "name"),
        "created": int(s.clock()),
        "metadata": p.get("metadata", {}),
        "livemode": False,
    }
    s.objects[product["id"]] = product
    return product


def create_price(s: State, p: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    # https://docs.stripe.com/api/prices/create
    currency = _required(p, "currency")
    if "product_data" in p:
        product = create_product(s, p["product_data"], {})["id"]
    else:
        product = s.get("product", _required(p, "product"), "product")["id"]
    decimal = p.get("unit_amount_decimal", p.get("unit_amount"))
    try:
        amount = Decimal(_required({"unit_amount_decimal": decimal}, "unit_amount_decimal"))
    except InvalidOperation:
        raise StripeError(400, f"Invalid decimal: {decimal}", param="unit_amount_decimal") from None
    if amount < 0 or amount.as_tuple().exponent < -12:  # type: ignore[operator]
        raise StripeError(
            400,
            "unit_amount_decimal takes at most 12 decimal places.",
            code="parameter_invalid_decimal",
            param="unit_amount_decimal",
        )
    recurring = p.get("recurring")
    if recurring is not None:
        # https://docs.stripe.com/billing/subscriptions/usage-based/pricing-models: a metered
        # price is attached to a meter (legacy usage records are gone since 2025-03-31.basil)
        recurring = {
            "interval": _required(recurring, "interval"),
            "interval_count": int(recurring.get("interval_count", 1)),
            "usage_type": recurring.get("usage_type", "licensed"),
            "meter": recurring.get("meter"),
        }
        if recurring["usage_type"] == "metered":
            s.get("billing.meter", _required(recurring, "meter"), "recurring[meter]")
    lookup_key = p.get("lookup_key")
    if lookup_key:
        holders = [o for o in s.of("price") if o["lookup_key"] == lookup_key]
        if holders and p.get("transfer_lookup_key") != "true":
            # https://docs.stripe.com/api/prices/create#create_price-transfer_lookup_key
            raise StripeError(
                400,
                f"A price (`{holders[0]['id']}`) already uses that lookup key.",
                code="lookup_key_exists",
                param="lookup_key",
            )
        for holder in holders:
            holder["lookup_key"] = None
    price = {
        "id": s.new_id("price"),
        "object": "price",
        "active": True,
        "currency": currency,
        "product": product,
        "unit_amount_decimal": format(amount, "f"),
        "unit_amount": int(amount) if amount == amount.to_integral_value() else None,
        "billing_scheme": "per_unit",
        "recurring": recurring,
        "lookup_key": lookup_key,
        "type": "recurring" if recurring else "one_time",
        "nickname": p.get("nickname"),
        "metadata": p.get("metadata", {}),
        "created": int(s.clock()),
        "livemode": False,
    }
    s.objects[price["id"]] = price
    return price


def list_prices(s: State, p: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    # https://docs.stripe.com/api/prices/list (lookup_keys[], active)
    prices = s.of("price")
    if "lookup_keys" in p:
        prices = [o for o in prices if o["lookup_key"] in p["lookup_keys"]]
    if "active" in p:
        prices = [o for o in prices if o["active"] == (p["active"] == "true")]
    return _listing(prices, p, "/v1/prices")


def create_meter(s: State, p: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    # https://docs.stripe.com/api/billing/meter/create
    event_name = _required(p, "event_name")
    formula = _required(p.get("default_aggregation", {}), "formula")
    if formula not in ("sum", "count", "last"):
        raise StripeError(
            400, f"Invalid default_aggregation[formula]: {formula}", param="default_aggregation[formula]"
        )
    if any(m["event_name"] == event_name and m["status"] == "active" for m in s.of("billing.meter")):
        raise StripeError(
            400, f"An active meter with event_name `{event_name}` already exists.", param="event_name"
        )
    mapping = p.get("customer_mapping", {})
    meter = {
        "id": s.new_id("mtr"),
        "object": "billing.meter",
        "status": "active",
        "display_name": _required(p, "display_name"),
        "event_name": event_name,
        "default_aggregation": {"formula": formula},
        "customer_mapping": {
            "type": mapping.get("type", "by_id"),
            "event_payload_key": mapping.get("event_payload_key", "stripe_customer_id"),
        },
        "value_settings": {
            "event_payload_key": p.get("value_settings", {}).get("event_payload_key", "value")
        },
        "event_time_window": p.get("event_time_window"),
        "created": int(s.clock()),
        "livemode": False,
    }
    s.objects[meter["id"]] = meter
    return meter


def list_meters(s: State, p: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    # https://docs.stripe.com/api/billing/meter/list
    meters = [m for m in s.of("billing.meter") if p.get("status") in (None, m["status"])]
    return _listing(meters, p, "/v1/billing/meters")


def get_meter(s: State, p: dict[str, Any], path: dict[str, str]) -> dict[str, Any]:
    return s.get("billing.meter", path["id"])


def deactivate_meter(s: State, p: dict[str, Any], path: dict[str, str]) -> dict[str, Any]:
    # https://docs.stripe.com/api/billing/meter/deactivate
    meter = s.get("billing.meter", path["id"])
    meter["status"] = "inactive"
    return meter


def create_meter_event(s: State, p: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    # https://docs.stripe.com/api/billing/meter-event/create
    now = s.clock()
    event_name, payload = _required(p, "event_name"), _required(p, "payload")
    identifier = p.get("identifier") or s.new_id("mev_ident")
    if len(identifier) > 100:
        raise StripeError(400, "identifier must be at most 100 characters.", param="identifier")
    timestamp = _integer(p, "timestamp", int(now))
    if not now - 35 * DAY <= timestamp <= now + 300:
        raise StripeError(
            400,
            "The timestamp must be within the past 35 calendar days or up to 5 minutes in the future.",
            code="timestamp_out_of_range",
            param="timestamp",
        )
    meter = next(
        (m for m in s.of("billing.meter") if m["event_name"] == event_name and m["status"] == "active"), None
    )
    value_key = meter["value_settings"]["event_payload_key"] if meter else "value"
    value = payload.get(value_key)
    if not isinstance(value, str) or not re.fullmatch(r"-?\d+", value):
        # The notes we build on (shared/notes/stripe-billing.md): a whole number in a string.
        raise StripeError(
            400, f"payload[{value_key}] must be a whole number, got {value!r}.", param=f"payload[{value_key}]"
        )
    seen = s.identifiers.get(identifier)
    if seen is not None and now - seen < IDENTIFIER_WINDOW_S:
        # The code is the documented one (Stripe's OpenAPI: `duplicate_meter_event`, "A meter
        # event with a duplicate identifier has already been submitted").
        raise StripeError(
            400,
            s.duplicate_message.format(identifier=identifier),
            code="duplicate_meter_event",
            headers={"Stripe-Should-Retry": "false"},
        )
    s.identifiers[identifier] = now
    event = {
        "object": "billing.meter_event",
        "created": int(now),
        "event_name": event_name,
        "identifier": identifier,
        "livemode": False,
        "payload": payload,
        "timestamp": timestamp,
    }
    # Validation past the request is asynchronous: https://docs.stripe.com/billing/subscriptions/
    # usage-based/recording-usage-api#handle-meter-event-errors (error_report_triggered).
    customer_key = meter["customer_mapping"]["event_payload_key"] if meter else "stripe_customer_id"
    customer = payload.get(customer_key)
    if meter is None:
        s.error_reports.append(
            {"code": "no_meter", "identifier": identifier, "message": f"No meter for {event_name}."}
        )
    elif customer not in s.objects or s.objects[customer]["object"] != "customer":
        s.error_reports.append(
            {
                "code": "meter_event_customer_not_found",
                "identifier": identifier,
                "meter": meter["id"],
                "message": f"No customer {customer} found.",
            }
        )
    else:
        s.events.append(event)
    return event


def event_summaries(s: State, p: dict[str, Any], path: dict[str, str]) -> dict[str, Any]:
    # https://docs.stripe.com/api/billing/meter-event-summary/list: start inclusive, end
    # exclusive, both on minute boundaries.
    customer = _required(p, "customer")
    start, end = _integer(p, "start_time"), _integer(p, "end_time")
    for name, value in (("start_time", start), ("end_time", end)):
        if value % 60:
            raise StripeError(400, f"{name} must be aligned with minute boundaries.", param=name)
    meter = s.get("billing.meter", path["id"])
    total = s.aggregated(meter["id"], customer, start, end)
    summary = {
        "id": s.new_id("mtrusg"),
        "object": "billing.meter_event_summary",
        "aggregated_value": int(total) if total == total.to_integral_value() else float(total),
        "start_time": start,
        "end_time": end,
        "livemode": False,
        "meter": meter["id"],
    }
    return _listing([summary], p, f"/v1/billing/meters/{meter['id']}/event_summaries")


# --- the HTTP layer: auth, faults, idempotency --------------------------------------------------


class Endpoint:
    def __init__(self, state: State, handler: Callable[..., dict[str, Any]]) -> None:
        self.state, self.handler = state, handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        s, method = self.state, request.method
        s.webhooks.base_url = str(request.base_url).rstrip("/")
        s.count(f"{method} {request.url.path}")
        fault = s.faults.draw(request.url.path)
        if fault:
            s.count(fault)
        try:
            self._authenticate(request.headers.get("authorization", ""))
            if fault == "rate_limit":
                # https://docs.stripe.com/rate-limits: 429, nothing executed, nothing saved.
                raise StripeError(
                    429,
                    "Request rate limit exceeded. Learn more about rate limits "
                    "here https://stripe.com/docs/rate-limits.",
                    type="invalid_request_error",
                    code="rate_limit",
                )
            body = (await request.body()).decode()
            pairs = parse_qsl(body if method == "POST" else request.url.query, keep_blank_values=True)
            key = request.headers.get("idempotency-key") if method == "POST" else None
            status, payload = await self._execute(request, form(pairs), key, fault)
        except StripeError as error:
            status, payload = error.status, json.dumps({"error": error.body}).encode()
            headers = error.headers
        else:
            headers = {}
        await checkout.deliver_pending(s)
        if fault == "lose_response" and s.faults.lose_mode == "drop":
            # Stored, then the connection dies mid-answer: the client cannot know it succeeded.
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(payload)).encode()),
                    ],
                }
            )
            await send(
                {"type": "http.response.body", "body": payload[: len(payload) // 2], "more_body": True}
            )
            return
        if fault == "lose_response":
            status, payload = 500, json.dumps({"error": {"type": "api_error", "message": "lost"}}).encode()
        response = Response(payload, status_code=status, headers=headers, media_type="application/json")
        await response(scope, receive, send)

    def _authenticate(self, authorization: str) -> None:
        # https://docs.stripe.com/api/authentication: Bearer with a secret key; test mode only here.
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key:
            raise StripeError(401, "You did not provide an API key.")
        if not key.startswith("sk_test_"):
            raise StripeError(
                401, f"Invalid API Key provided: {key[:8]}****{key[-4:]}", code="api_key_invalid"
            )

    async def _execute(
        self, request: Request, params: dict[str, Any], key: str | None, fault: str | None
    ) -> tuple[int, bytes]:
        s = self.state
        fingerprint = json.dumps([request.url.path, params], sort_keys=True)
        if key is not None:
            # https://docs.stripe.com/api/idempotent_requests
            saved = s.idempotency.get(key)
            if saved and s.clock() - saved[3] < IDEMPOTENCY_WINDOW_S:
                if saved[0] != fingerprint:
                    raise StripeError(
                        400,
                        "Keys for idempotent requests can only be used with the "
                        f"same parameters they were first used with. Try using a key "
                        f"other than '{key}' if you meant to execute a different "
                        "request.",
                        type="idempotency_error",
                    )
                return saved[1], saved[2]
            if key in s.in_flight:
                # https://docs.stripe.com/error-low-level#idempotency: a concurrent retry waits.
                raise StripeError(
                    409,
                    "There is currently another in-progress request using this "
                    "Idempotent Key (that probably means you submitted twice, and "
                    "the other request is still going through): " + key,
                    code="idempotency_key_in_use",
                )
            s.in_flight.add(key)
        try:
            if fault == "timeout":
                await asyncio.sleep(s.faults.hang_s)  # then it goes through, after the client left
            if fault == "error":
                # A 5xx from inside the endpoint is saved and replayed like any first answer
                # (https://docs.stripe.com/api/idempotent_requests "including 500 errors").
                error = StripeError(
                    500,
                    "An unknown error occurred",
                    type="api_error",
                    headers={"Stripe-Should-Retry": "false"},
                )
                status, body = 500, json.dumps({"error": error.body}).encode()
            else:
                # A 4xx is validation: "no idempotent result is saved" (same page), so it raises.
                status, body = 200, json.dumps(self.handler(s, params, request.path_params)).encode()
            if key is not None:
                s.idempotency[key] = (fingerprint, status, body, s.clock())
        finally:
            if key is not None:
                s.in_flight.discard(key)
        return status, body


def create_app(*, seed: int = 0, clock: Callable[[], float] = time.time) -> Starlette:
    from devtools.teststripe import stream as v2  # here: they build on this module
    from devtools.teststripe import subscriptions

    state = State(clock=clock, faults=Faults(rng=random.Random(seed)))
    routes = [
        ("/v1/customers", create_customer, "POST"),
        ("/v1/customers/{id}", lambda s, p, path: s.get("customer", path["id"]), "GET"),
        ("/v1/products", create_product, "POST"),
        ("/v1/prices", create_price, "POST"),
        ("/v1/prices", list_prices, "GET"),
        ("/v1/prices/{id}", lambda s, p, path: s.get("price", path["id"]), "GET"),
        ("/v1/billing/meters", create_meter, "POST"),
        ("/v1/billing/meters", list_meters, "GET"),
        ("/v1/billing/meters/{id}", get_meter, "GET"),
        ("/v1/billing/meters/{id}/deactivate", deactivate_meter, "POST"),
        ("/v1/billing/meters/{id}/event_summaries", event_summaries, "GET"),
        ("/v1/billing/meter_events", create_meter_event, "POST"),
        *checkout.ENDPOINTS,
        *connect.ENDPOINTS,
        *invoices.ENDPOINTS,
        *subscriptions.ENDPOINTS,
    ]

    async def set_faults(request: Request) -> JSONResponse:
        state.faults.set(**(await request.json()))
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[
            *(Route(path, Endpoint(state, handler), methods=[method]) for path, handler, method in routes),
            Route("/_test/faults", set_faults, methods=["POST"]),
            *checkout.scripted_routes(state),
            *connect.scripted_routes(state),
            *invoices.scripted_routes(state),
            *subscriptions.scripted_routes(state),
            *v2.routes(state),
        ]
    )
    app.state.stripe = state
    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="TEST SUPPORT: an in-memory Stripe on loopback")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    uvicorn.run(create_app(seed=args.seed), host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()

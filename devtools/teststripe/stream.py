"""TEST SUPPORT ONLY: Stripe's v2 meter event stream for the test Stripe (devtools/teststripe/server.py).

A meter event session (secret key) hands out a token valid 15 minutes; the stream takes up to 100
events a call with that token as Bearer and validates each event asynchronously: an event Stripe
would refuse on v1 is dropped and recorded as an error report, and the call still succeeds.
https://docs.stripe.com/api/v2/billing-meter-stream
"""

from __future__ import annotations

import datetime
import json
import secrets
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from devtools.teststripe.server import Endpoint, State, StripeError, create_meter_event

SESSION = "v2.billing.meter_event_session"
SESSION_TTL_S = 15 * 60  # "Authentication tokens are only valid for 15 minutes"
MAX_EVENTS = 100  # "Supports up to 100 events per request"


def _iso(unix: float) -> str:
    return (
        datetime.datetime.fromtimestamp(unix, datetime.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def create_session(s: State, p: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    # https://docs.stripe.com/api/v2/billing-meter-stream/session/create: the object's times are
    # RFC 3339 strings, the token lives 15 minutes.
    now = s.clock()
    session: dict[str, Any] = {
        "id": s.new_id("mes"),
        "object": SESSION,
        "authentication_token": f"mes_token_{secrets.token_urlsafe(18)}",
        "created": _iso(now),
        "expires_at": _iso(now + SESSION_TTL_S),
        "livemode": False,
    }
    s.objects[session["id"]] = session
    return session


def create_stream_events(s: State, p: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    # https://docs.stripe.com/api/v2/billing-meter-stream/stream/create: the request's shape is
    # checked now (events, 1 to 100 of them); each event later, by the same rules as v1's.
    events = p.get("events")
    if not isinstance(events, list) or not events:
        raise StripeError(400, "Missing required param: events.", code="parameter_missing", param="events")
    if len(events) > MAX_EVENTS:
        raise StripeError(400, f"events takes at most {MAX_EVENTS} items.", param="events")
    for event in events:
        try:
            create_meter_event(s, _as_v1(event), {})
        except StripeError as error:
            # Asynchronous validation: nothing fails the call; the event becomes an error report
            # (https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage-api
            # #handle-meter-event-errors), a duplicate identifier included.
            name = event.get("event_name") if isinstance(event, dict) else None
            meter = next(
                (
                    m["id"]
                    for m in s.of("billing.meter")
                    if m["event_name"] == name and m["status"] == "active"
                ),
                None,
            )
            s.error_reports.append(
                {
                    "code": error.body.get("code", "invalid_meter_event"),
                    "identifier": event.get("identifier") if isinstance(event, dict) else None,
                    "message": error.body["message"],
                    "meter": meter,  # the report goes with the meter, or as no_meter_found
                    "via": "v2.billing.meter_event_stream",
                }
            )
    return {}  # "200 Successful response": an empty object


def _as_v1(event: Any) -> dict[str, Any]:
    """A stream event as v1's form parameters: v2 timestamps are RFC 3339, v1's Unix seconds."""
    if not isinstance(event, dict):
        raise StripeError(400, "Each event must be an object.", param="events")
    params = {key: event[key] for key in ("event_name", "identifier", "payload") if key in event}
    if event.get("timestamp") is not None:
        try:
            moment = datetime.datetime.fromisoformat(str(event["timestamp"]))
        except ValueError:
            raise StripeError(400, f"Invalid timestamp: {event['timestamp']}", param="timestamp") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        params["timestamp"] = str(int(moment.timestamp()))
    return params


class _JsonEndpoint(Endpoint):
    """v2 bodies are JSON (https://docs.stripe.com/api/v2/overview), not form-encoded."""

    async def _execute(
        self, request: Request, params: dict[str, Any], key: str | None, fault: str | None
    ) -> tuple[int, bytes]:
        raw = await request.body()
        try:
            params = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise StripeError(400, "The request body is not valid JSON.") from None
        if not isinstance(params, dict):
            raise StripeError(400, "The request body must be a JSON object.")
        return await super()._execute(request, params, key, fault)


class _StreamEndpoint(_JsonEndpoint):
    def _authenticate(self, authorization: str) -> None:
        # https://docs.stripe.com/api/v2/billing-meter-stream/stream/create: Bearer <session
        # token>; an expired one is 401 billing_meter_event_session_expired, of type
        # temporary_session_expired (the SDK raises TemporarySessionExpiredError for it).
        scheme, _, token = authorization.partition(" ")
        session = next((o for o in self.state.of(SESSION) if o["authentication_token"] == token), None)
        if scheme.lower() != "bearer" or session is None:
            raise StripeError(401, "Invalid meter event session token provided.", code="api_key_invalid")
        expires = datetime.datetime.fromisoformat(session["expires_at"]).timestamp()
        if self.state.clock() >= expires:
            raise StripeError(
                401,
                "The temporary session token has expired.",
                type="temporary_session_expired",
                code="billing_meter_event_session_expired",
            )


def routes(state: State) -> list[Route]:
    """Registered by devtools/teststripe/server.py; faults reach them by Faults.paths, like v1's."""
    return [
        Route("/v2/billing/meter_event_session", _JsonEndpoint(state, create_session), methods=["POST"]),
        Route(
            "/v2/billing/meter_event_stream", _StreamEndpoint(state, create_stream_events), methods=["POST"]
        ),
    ]

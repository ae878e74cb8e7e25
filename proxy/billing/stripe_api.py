"""The `stripe` SDK as the proxy uses it: async, over an httpx client the proxy owns, at the
addresses `[billing]` names (Stripe's by default; the test Stripe's in tests and the demo)."""

from __future__ import annotations

import asyncio
import datetime
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import stripe

from proxy.config import BillingConfig

T = TypeVar("T")


class _HTTPX(stripe.HTTPXClient):
    """The SDK's httpx adapter, with two changes: the form body goes as `content=` (its `data=`
    string is deprecated in httpx and warnings are errors in our tests), and the client ignores
    HTTP(S)_PROXY from the environment, which must never see the secret key."""

    def __init__(self, timeout_s: float, connections: int) -> None:
        super().__init__(timeout=timeout_s)
        self._client_async = httpx.AsyncClient(
            trust_env=False,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )

    def _get_request_args_kwargs(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any
    ) -> list[Any]:
        body = post_data.encode() if isinstance(post_data, str) else post_data
        return [(method, url), {"headers": headers, "content": body or b"", "timeout": self._timeout}]


@dataclass
class Stripe:
    client: stripe.StripeClient
    http: _HTTPX

    async def aclose(self) -> None:
        await self.http.close_async()


def connect(secret_key: str, billing: BillingConfig) -> Stripe:
    """Never retries by itself (`max_network_retries=0`): the metering worker owns retries, so
    that one customer's failing calls never hold a connection others are waiting for."""
    http = _HTTPX(billing.timeout_s, billing.concurrency + 4)
    client = stripe.StripeClient(
        secret_key,
        base_addresses={"api": billing.stripe_api_base, "meter_events": billing.stripe_meter_events_base},
        http_client=http,
        max_network_retries=0,
    )
    return Stripe(client, http)


async def retried(
    call: Callable[..., Awaitable[T]], *args: Any, attempts: int = 6, base_s: float = 0.5, **kwargs: Any
) -> T:
    """`call(*args, **kwargs)`, tried again with exponential backoff and full jitter on what
    Stripe says to retry (429, 5xx, a lost connection): for one-off reads such as reconcile's,
    where one refused call must not abort the whole run."""
    for attempt in range(attempts):
        try:
            return await call(*args, **kwargs)
        except (stripe.RateLimitError, stripe.APIConnectionError) as error:
            failure: stripe.StripeError = error
        except stripe.APIError as error:
            if (error.http_status or 500) < 500:
                raise
            failure = error
        if attempt + 1 == attempts:
            raise failure
        await asyncio.sleep(random.uniform(0, base_s * 2**attempt))
    raise AssertionError("unreachable")


RENEW_BEFORE = datetime.timedelta(minutes=1)  # of a session's 15: no call should meet its expiry


class MeterEventStream:
    """Stripe's v2 meter event stream (https://docs.stripe.com/api/v2/billing-meter-stream): up to
    100 events a call, authenticated by a meter event session's token, which lives 15 minutes.
    The session is opened on first use and renewed `renew_before` ahead of its expiry, or at once
    after Stripe answers that it expired (`expire`)."""

    def __init__(
        self,
        client: stripe.StripeClient,
        clock: Callable[[], datetime.datetime],
        renew_before: datetime.timedelta = RENEW_BEFORE,
    ) -> None:
        self._client, self._clock, self._renew_before = client, clock, renew_before
        self._token: str | None = None
        self._expires_at = datetime.datetime.min.replace(tzinfo=datetime.UTC)
        self._opening = asyncio.Lock()
        self.sessions = 0

    async def send(self, events: list[dict[str, Any]]) -> None:
        """Raises the SDK's errors, TemporarySessionExpiredError included, as they come."""
        token = await self._session()
        params: Any = {"events": events}
        try:
            # A fresh Idempotency-Key per try (the SDK's): the identifiers stop a second event.
            await self._client.v2.billing.meter_event_stream.create_async(params, options={"api_key": token})
        except (stripe.TemporarySessionExpiredError, stripe.AuthenticationError):
            self.expire(token)  # expired, or unknown to Stripe: the next call opens a new session
            raise

    def expire(self, token: str) -> None:
        if self._token == token:
            self._token = None

    async def _session(self) -> str:
        async with self._opening:  # one session for all the calls in flight
            if self._token is None or self._clock() >= self._expires_at - self._renew_before:
                opened = self._clock()
                session = await self._client.v2.billing.meter_event_session.create_async()
                self._token = session.authentication_token
                # Its lifetime by Stripe's clock, counted on ours: a skew between them must
                # neither renew at every call nor keep a dead token.
                lifetime = datetime.datetime.fromisoformat(
                    session.expires_at
                ) - datetime.datetime.fromisoformat(session.created)
                self._expires_at = opened + lifetime
                self.sessions += 1
            return self._token

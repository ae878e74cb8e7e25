"""The `stripe` SDK as the proxy uses it: async, over an httpx client the proxy owns, at the
addresses `[billing]` names (Stripe's by default; the test Stripe's in tests and the demo)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import stripe

from proxy.config import BillingConfig


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

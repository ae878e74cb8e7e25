"""What every request handler of the edge shares, built once in the app's lifespan: who is
calling (an API key's customer, or an anonymous address), their limits, the model server, the
ledger and billing."""

from __future__ import annotations

import collections
import dataclasses
import datetime
from collections.abc import Callable
from dataclasses import dataclass

from anyio import to_thread
from starlette.requests import Request

from proxy.auth import AddressHasher, Caller, client_address, customer_for_key, presented_key
from proxy.billing import Billing
from proxy.cache import ResultCache
from proxy.config import Config
from proxy.forward import Upstream
from proxy.idempotency import Idempotency
from proxy.ledger import Ledger
from proxy.limits import DemoQuota, RateLimiter
from proxy.logs import annotate
from proxy.metrics import Metrics


@dataclass(frozen=True)
class Gateway:
    config: Config
    ledger: Ledger
    upstream: Upstream
    billing: Billing
    limiter: RateLimiter
    quota: DemoQuota
    cache: ResultCache
    idempotency: Idempotency
    addresses: AddressHasher
    metrics: Metrics
    clock: Callable[[], datetime.datetime]
    # Which status each recently seen prediction's record was last written with, by this process:
    # a poll that changes nothing then writes nothing (records.py). Bounded; losing it costs a write.
    remembered: collections.OrderedDict[str, str] = dataclasses.field(default_factory=collections.OrderedDict)

    async def identify(self, request: Request, *, creates: bool = False) -> Caller:
        """The caller, once its limits admit this request (else TooManyRequests)."""
        key = presented_key(request.headers.get("authorization"))
        if key is None:
            peer = request.client.host if request.client else None
            address = client_address(
                peer, request.headers.get("x-forwarded-for"), self.config.trust_x_forwarded_for
            )
            caller = self.addresses.caller(address)
        else:
            caller = await to_thread.run_sync(customer_for_key, self.ledger, key, self.now())
        annotate(request.scope, caller=caller.kind)
        await self.limiter.hit(caller.id, creates=creates)
        return caller

    def now(self) -> str:
        return self.clock().isoformat(timespec="microseconds")


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def origin(request: Request) -> str:
    return str(request.base_url).rstrip("/")

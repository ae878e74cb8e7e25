"""What operators and orchestrators ask the proxy: is it alive (`/healthz`), can it serve
(`/readyz`: its database, its Redis when it has one, the model server; plus warnings that do not
stop it serving, such as bills piling up in the outbox without STRIPE_SECRET_KEY), and how is it
doing (`/metrics`, Prometheus)."""

from __future__ import annotations

import hmac
import ipaddress

from anyio import to_thread
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from proxy.errors import StorageUnavailable, Unauthorized
from proxy.gateway import gateway_of
from proxy.metrics import CONTENT_TYPE


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    gateway = gateway_of(request)
    checks = {"database": await to_thread.run_sync(gateway.ledger.ping)}
    redis: Redis | None = request.app.state.redis
    if redis is not None:
        checks["redis"] = await _redis_answers(redis)
    checks["model_server"] = await gateway.upstream.ready()
    warnings = await _warnings(request) if checks["database"] else []
    extra = {"warnings": warnings} if warnings else {}
    if all(checks.values()):
        return JSONResponse({"status": "ready", "checks": checks, **extra})
    missing = " and ".join(name.replace("_", " ") for name, ok in checks.items() if not ok)
    return JSONResponse(
        {"detail": f"not ready: the {missing} cannot be reached", "checks": checks, **extra},
        status_code=503,
        headers={"retry-after": "5"},
    )


async def _warnings(request: Request) -> list[str]:
    """What an operator must know though the proxy can serve. Counts are for this machine, its
    private network and the metrics token only: a public edge must not tell its traffic."""
    gateway = gateway_of(request)
    if gateway.billing.enforcing:
        return []
    try:
        outbox = await gateway.billing.outbox()
    except StorageUnavailable:
        return []
    if not outbox.backlog:
        return []
    if not _may_see_counts(request, gateway.config.secrets.metrics_token):
        return ["billing is not configured (STRIPE_SECRET_KEY): meter events wait in the ledger's outbox"]
    return [
        f"billing is not configured (STRIPE_SECRET_KEY): {outbox.backlog} meter event(s) wait in the "
        f"ledger's outbox, the oldest from {outbox.oldest}; nobody is charged for them until it is set"
    ]


def _may_see_counts(request: Request, token: str | None) -> bool:
    presented = (request.headers.get("authorization") or "").removeprefix("Bearer ").strip()
    return bool(token and hmac.compare_digest(presented.encode(), token.encode())) or _internal(request)


async def metrics(request: Request) -> Response:
    """For Prometheus: to a bearer of METRICS_TOKEN, or to a scraper on this machine or its
    private network that came straight here, not through the load balancer (which adds
    X-Forwarded-For): a public edge must not tell the world its traffic and revenue."""
    gateway = gateway_of(request)
    if not _may_see_counts(request, gateway.config.secrets.metrics_token):
        raise Unauthorized("/metrics needs 'Authorization: Bearer <METRICS_TOKEN>' from outside")
    try:
        outbox = await gateway.billing.outbox()
    except StorageUnavailable:
        outbox = None  # the gauges keep their last values; /readyz says what is wrong
    return Response(gateway.metrics.render(outbox, gateway.clock()), media_type=CONTENT_TYPE)


def _internal(request: Request) -> bool:
    if "x-forwarded-for" in request.headers or "forwarded" in request.headers:
        return False
    try:
        peer = ipaddress.ip_address(request.client.host if request.client else "")
    except ValueError:
        return False
    return peer.is_loopback or peer.is_private


async def _redis_answers(redis: Redis) -> bool:
    try:
        return bool(await redis.ping())
    except (RedisError, OSError):
        return False


ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]

"""The edge proxy as one Starlette app: the static site at `/`, the metered API at `/v1`.

Like a Worker, it holds the secrets and is the only thing the public reaches; the inference
server behind it trusts whoever has the inference token. Everything a request needs is built
once, in the lifespan: the database (SQLite or PostgreSQL), Redis when configured, the model
server's client, billing.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from anyio import to_thread
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount

from proxy import api, dashboard, health, inference_events, listing, models_api, openapi, unoffered, uploads
from proxy.auth import AddressHasher, Caller
from proxy.billing import Billing
from proxy.billing import routes as billing_routes
from proxy.cache import ResultCache
from proxy.config import Config, missing_secret_message
from proxy.errors import ConfigError, RequestError, StorageUnavailable
from proxy.forward import Upstream
from proxy.gateway import Gateway, gateway_of
from proxy.idempotency import Idempotency
from proxy.ledger import Ledger
from proxy.limits import DemoQuota, MemoryQuota, RateLimiter, RedisQuota, limits_storage
from proxy.logs import AccessLog, log_event
from proxy.metrics import Metrics
from proxy.site import Site, checkout_origin
from proxy.storage import open_database


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def create_app(config: Config, *, clock: Callable[[], datetime.datetime] = utc_now) -> Starlette:
    token = config.secrets.inference_token
    if not token:
        raise ConfigError(missing_secret_message("INFERENCE_TOKEN", config.config_dir))
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        database = await to_thread.run_sync(
            lambda: open_database(config.database_url, pool_size=config.ledger.pool_size)
        )
        redis = Redis.from_url(config.limits.redis_url) if config.limits.redis_url else None
        ledger = Ledger(database)
        timeout = httpx.Timeout(config.upstream_timeout_s, connect=5.0)
        connections = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        try:
            # trust_env=False: an HTTP(S)_PROXY in the environment must not see the token.
            async with httpx.AsyncClient(timeout=timeout, limits=connections, trust_env=False) as client:
                upstream = Upstream(client, config.upstream_url, token)
                billing = Billing(config, database, upstream, clock, admit=_admit, identify=_identify)
                limiter = RateLimiter(config.ratelimits, limits_storage(redis))
                limiter.refused = lambda name: metrics.rate_limited.labels(name).inc()
                cache = ResultCache(config.cache.rules, redis, max_entries=config.cache.max_entries)
                cache.counted = metrics.count_cache
                app.state.redis = redis
                app.state.billing = billing
                app.state.gateway = Gateway(
                    config=config,
                    ledger=ledger,
                    upstream=upstream,
                    billing=billing,
                    limiter=limiter,
                    quota=_quota(config, ledger, redis),
                    cache=cache,
                    idempotency=Idempotency(database),
                    addresses=AddressHasher(token),
                    metrics=metrics,
                    clock=clock,
                )
                log_event("proxy_started", database=database.dialect, redis=redis is not None)
                async with billing.running():
                    yield
        finally:
            if redis is not None:
                await redis.aclose()
            await to_thread.run_sync(database.close)

    middleware = [Middleware(AccessLog, observe=metrics.observe)]
    if config.allowed_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(config.allowed_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["authorization", "content-type", "prefer", "cancel-after", "idempotency-key"],
                expose_headers=["retry-after", "preference-applied", "idempotent-replayed"],
                max_age=600,
            )
        )
    # Without a Stripe key "Get an API key" answers on this origin, so forms stay on 'self'.
    form_action = checkout_origin(config.billing) if config.secrets.stripe_secret_key else ""
    return Starlette(
        routes=[
            *health.ROUTES,
            *api.ROUTES,
            *uploads.ROUTES,
            *listing.ROUTES,
            *models_api.ROUTES,
            *unoffered.ROUTES,
            *openapi.ROUTES,
            *billing_routes(),
            *inference_events.ROUTES,
            *dashboard.ROUTES,
            Mount("/v1", app=api.not_found),
            Mount(
                "/",
                app=Site(
                    config.site_dir,
                    form_action=form_action,
                    plain_http=config.public_origin.startswith("http:"),
                ),
            ),
        ],
        middleware=middleware,
        exception_handlers={
            RequestError: request_error,
            HTTPException: http_error,
            Exception: internal_error,
        },
        lifespan=lifespan,
    )


def _quota(config: Config, ledger: Ledger, redis: Redis | None) -> DemoQuota:
    if redis is not None:
        return RedisQuota(config.demo_daily_quota, redis)

    async def count(caller_id: str, since: str) -> int:
        return await to_thread.run_sync(ledger.count_predictions_since, caller_id, since)

    return MemoryQuota(config.demo_daily_quota, count)


async def _admit(request: Request) -> Any:
    return await gateway_of(request).identify(request, creates=True)


async def _identify(request: Request) -> Caller:
    return await gateway_of(request).identify(request)


async def request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    headers = dict(exc.headers)
    if exc.retry_after is not None:
        headers["retry-after"] = str(exc.retry_after)
    if isinstance(exc, StorageUnavailable):
        log_event("storage_unavailable", level=logging.ERROR, path=request.url.path, reason=str(exc))
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def internal_error(request: Request, exc: Exception) -> Response:
    log_event("internal_error", level=logging.ERROR, error=type(exc).__name__, path=request.url.path)
    return JSONResponse({"detail": "the proxy failed on this request; it has been logged"}, status_code=500)

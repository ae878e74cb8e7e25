"""The edge proxy as one Starlette app: the static site at `/`, the metered API at `/v1`.

Like a Worker, it holds the secrets and is the only thing the public reaches; the inference
server behind it trusts whoever has the inference token.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
from anyio import to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount

from proxy import api, checkout, inference_events, stripe_api, webhooks
from proxy.auth import AddressHasher
from proxy.billing import Biller
from proxy.config import Config, missing_secret_message
from proxy.errors import ConfigError, RequestError
from proxy.forward import Upstream
from proxy.ledger import Ledger
from proxy.limits import DemoQuota, RateLimiter
from proxy.logs import AccessLog, log_event
from proxy.metering import metering
from proxy.site import Site, checkout_origin


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def create_app(config: Config, *, clock: Callable[[], datetime.datetime] = utc_now) -> Starlette:
    token = config.secrets.inference_token
    if not token:
        raise ConfigError(missing_secret_message("INFERENCE_TOKEN", config.config_dir))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ledger = await to_thread.run_sync(Ledger, config.ledger_path)
        timeout = httpx.Timeout(config.upstream_timeout_s, connect=5.0)
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        # trust_env=False: an HTTP(S)_PROXY in the environment must not see the token.
        key = config.secrets.stripe_secret_key
        connection = stripe_api.connect(key, config.billing) if key else None
        async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as client:
            upstream = Upstream(client, config.upstream_url, token)
            app.state.gateway = api.Gateway(
                config=config,
                ledger=ledger,
                upstream=upstream,
                biller=Biller(ledger, upstream, clock),
                limiter=RateLimiter(config.ratelimits),
                quota=DemoQuota(config.demo_daily_quota),
                addresses=AddressHasher(token),
                clock=clock,
                stripe=connection.client if connection else None,
            )
            try:
                async with metering(config, ledger):
                    yield
            finally:
                if connection:
                    await connection.aclose()
                ledger.close()

    middleware = [Middleware(AccessLog)]
    if config.allowed_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(config.allowed_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["authorization", "content-type", "prefer", "cancel-after"],
                expose_headers=["retry-after", "preference-applied"],
                max_age=600,
            )
        )
    return Starlette(
        routes=[
            *api.ROUTES,
            *webhooks.ROUTES,
            *inference_events.ROUTES,
            *checkout.ROUTES,
            Mount("/v1", app=api.not_found),
            # Without a Stripe key "Get an API key" answers on this origin, so forms stay on 'self'.
            Mount("/", app=Site(config.site_dir, form_action=checkout_origin(config.billing)
                                if config.secrets.stripe_secret_key else "")),
        ],
        middleware=middleware,
        exception_handlers={
            RequestError: request_error,
            HTTPException: http_error,
            Exception: internal_error,
        },
        lifespan=lifespan,
    )


async def request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    headers = dict(exc.headers)
    if exc.retry_after is not None:
        headers["retry-after"] = str(exc.retry_after)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def internal_error(request: Request, exc: Exception) -> Response:
    log_event("internal_error", level=logging.ERROR, error=type(exc).__name__, path=request.url.path)
    return JSONResponse({"detail": "the proxy failed on this request; it has been logged"}, status_code=500)

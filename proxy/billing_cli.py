"""`python -m proxy billing ...`: the operator's Stripe commands, printed for a person to read."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys

import httpx

from proxy import catalog, stripe_api
from proxy.config import Config, missing_secret_message
from proxy.errors import ConfigError, ProxyError
from proxy.forward import Upstream
from proxy.ledger import Ledger
from proxy.reconcile import reconcile


def run_billing(args: argparse.Namespace, config: Config) -> int:
    key = config.secrets.stripe_secret_key
    if not key:
        raise ConfigError(missing_secret_message("STRIPE_SECRET_KEY", config.config_dir))
    if args.action == "sync-catalog":
        if not config.secrets.inference_token:
            raise ConfigError(missing_secret_message("INFERENCE_TOKEN", config.config_dir))
        return asyncio.run(_sync_catalog(config, key, config.secrets.inference_token))
    now = datetime.datetime.now(datetime.UTC)
    since = _moment(args.since, "--since") if args.since else now - datetime.timedelta(days=35)
    until = _moment(args.until, "--until") if args.until else now
    return asyncio.run(_reconcile(config, key, since, until, set(args.customer)))


def _moment(text: str, flag: str) -> datetime.datetime:
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{flag} must be an ISO 8601 time like 2025-06-01T00:00:00Z, got {text!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


async def _sync_catalog(config: Config, key: str, token: str) -> int:
    connection = stripe_api.connect(key, config.billing)
    try:
        async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
            products = await catalog.models(Upstream(http, config.upstream_url, token))
        for line in await catalog.sync(connection.client, products):
            print(line)
    except ProxyError as error:
        print(f"modelfolio proxy: {error}", file=sys.stderr)
        return 1
    finally:
        await connection.aclose()
    return 0


async def _reconcile(
    config: Config, key: str, since: datetime.datetime, until: datetime.datetime, customers: set[str]
) -> int:
    connection = stripe_api.connect(key, config.billing)
    ledger = Ledger(config.ledger_path)
    try:
        differences, pairs = await reconcile(connection.client, ledger, since, until, customers)
        pending = len(ledger.undelivered_meter_events(limit=1_000_000))
    finally:
        ledger.close()
        await connection.aclose()
    for difference in differences:
        print(difference)
    print(
        f"{pairs} customer x meter pairs compared from {since.isoformat()} to {until.isoformat()}: "
        f"{len(differences)} difference(s); {pending} event(s) still in the outbox, not compared"
    )
    return 1 if differences else 0

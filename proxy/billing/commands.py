"""`python -m proxy billing ...`: the operator's Stripe commands, printed for a person to read.

sync-catalog             a meter and a metered price per model; every subscription priced
reconcile                the ledger against Stripe: milliseconds, money, dead letters
dead-letters [resend]    the events the worker gave up on; a resend checked against Stripe
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys

import httpx

from proxy.billing import catalog, dead_letters, stripe_api
from proxy.billing.payouts.commands import reconcile_payouts
from proxy.billing.reconcile import reconcile, window
from proxy.billing.reconcile_money import check_money
from proxy.billing.store import UsageStore
from proxy.billing.subscriptions import SubscriptionStore
from proxy.config import Config, missing_secret_message
from proxy.errors import CommandError, ConfigError
from proxy.forward import Upstream
from proxy.storage import open_database


def run_billing(args: argparse.Namespace, config: Config) -> int:
    key = config.secrets.stripe_secret_key
    if not key:
        raise ConfigError(missing_secret_message("STRIPE_SECRET_KEY", config.config_dir))
    if args.action == "sync-catalog":
        if not config.secrets.inference_token:
            raise ConfigError(missing_secret_message("INFERENCE_TOKEN", config.config_dir))
        return asyncio.run(_sync_catalog(config, key, config.secrets.inference_token))
    if args.action == "dead-letters":
        return _dead_letters(args, config, key)
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
    except CommandError as error:
        print(f"modelfolio proxy: {error}", file=sys.stderr)
        return 1
    finally:
        await connection.aclose()
    return 0


async def _reconcile(
    config: Config, key: str, since: datetime.datetime, until: datetime.datetime, customers: set[str]
) -> int:
    connection = stripe_api.connect(key, config.billing)
    database = open_database(config.database_url)
    store = UsageStore(database)
    notes: list[str] = []
    try:
        differences, pairs = await reconcile(connection.client, store, since, until, customers, notes=notes)
        start, end = (_iso(moment) for moment in window(since, until))
        lanes = sorted(store.delivered_meter_totals(start, end))
        money = await check_money(connection.client, store, SubscriptionStore(database), lanes, start, end)
        pending = store.outbox_stats().backlog
        transfers = await reconcile_payouts(config, key, database)  # authors' transfers, all time
        dead = len(store.dead_letters())
    finally:
        database.close()
        await connection.aclose()
    for line in [*map(str, differences), *map(str, money), *notes]:
        print(line)
    print(
        f"{pairs} customer x meter pairs compared from {since.isoformat()} to {until.isoformat()}: "
        f"{len(differences)} difference(s) in milliseconds, {len(money)} in money; "
        f"{pending} event(s) still in the outbox, {len(notes)} pair(s) in flight"
    )
    if dead:
        print(
            f"{dead} dead letter(s), not billed at Stripe: `python -m proxy billing dead-letters` lists them"
        )
    print(*transfers.lines(), sep="\n")
    return 1 if differences or money or dead or not transfers.agrees else 0


def _dead_letters(args: argparse.Namespace, config: Config, key: str) -> int:
    database = open_database(config.database_url)
    store = UsageStore(database)
    try:
        wanted = list(args.prediction_ids)
        dead = store.dead_letters(wanted or None)
        unknown = sorted(set(wanted) - {letter.event.prediction_id for letter in dead})
        if unknown:
            raise CommandError(f"no dead letter with id {', '.join(unknown)}")
        if args.what == "list":
            for letter in dead:
                event = letter.event
                print(
                    f"{event.prediction_id}  {event.customer}  {event.event_name}  {event.value_ms} ms  "
                    f"made {event.created_at[:19]}  dead {letter.dead_at[:19]}: {letter.reason}"
                )
            print(
                f"{len(dead)} dead letter(s)"
                + ("; resend them with `billing dead-letters resend --all`" if dead else "")
            )
            return 0
        if not wanted and not args.all:
            raise CommandError("name the dead letters to resend (their prediction ids), or pass --all")
        now = datetime.datetime.now(datetime.UTC)
        outcomes = asyncio.run(_resend(config, key, store, dead, now))
    finally:
        database.close()
    for outcome in outcomes:
        print(outcome)
    held = sum(outcome.action == "held" for outcome in outcomes)
    print(f"{len(outcomes) - held} settled, {held} held")
    return 1 if held else 0


async def _resend(
    config: Config, key: str, store: UsageStore, dead: list[dead_letters.DeadLetter], now: datetime.datetime
) -> list[dead_letters.Outcome]:
    connection = stripe_api.connect(key, config.billing)
    try:
        return await dead_letters.resend(connection.client, store, dead, now)
    finally:
        await connection.aclose()


def _iso(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="microseconds")

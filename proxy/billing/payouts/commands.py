"""`python -m proxy authors ...`: the owner's side of paying model authors.

    authors add ada --email ada@example.com [--country US]   an Express account for the author
    authors onboard ada                                       a fresh onboarding link to send them
    authors list                                              accounts, models, paid and pending

An Account Link is a short-lived bearer URL (about 5 minutes, single use): it is printed for the
owner to pass on, never logged or stored.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import re
import sys

import stripe

from proxy import _parse as parse
from proxy.billing import stripe_api
from proxy.billing.payouts.outbox import TransferOutbox
from proxy.billing.payouts.reconcile import TransferReport, reconcile_transfers
from proxy.billing.payouts.store import Author, PayoutLedger
from proxy.billing.payouts.worker import metadata
from proxy.config import Config, missing_secret_message
from proxy.errors import CommandError, ConfigError
from proxy.storage import Database, open_database

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_COUNTRY = re.compile(r"[A-Z]{2}")


def run_authors(args: argparse.Namespace, config: Config) -> int:
    try:
        handle = parse.author(args.handle, "the author's handle") if args.action != "list" else ""
        if args.action == "add":
            _check_add(args)
    except (ConfigError, CommandError) as error:  # a wrong argument: a usage error, as argparse's are
        print(f"modelfolio proxy: {error}", file=sys.stderr)
        return 2
    database = open_database(config.database_url)
    try:
        if args.action == "list":
            return _list(config, database)
        key = config.secrets.stripe_secret_key
        if not key:
            raise ConfigError(missing_secret_message("STRIPE_SECRET_KEY", config.config_dir))
        return asyncio.run(_with_stripe(args, config, database, key, handle))
    finally:
        database.close()


def _check_add(args: argparse.Namespace) -> None:
    if not _EMAIL.fullmatch(args.email):
        raise CommandError(f"--email must be an address like ada@example.com, got {args.email!r}")
    if not _COUNTRY.fullmatch(args.country):
        raise CommandError(f"--country must be two capital letters like US, got {args.country!r}")


async def _with_stripe(
    args: argparse.Namespace, config: Config, database: Database, key: str, handle: str
) -> int:
    connection = stripe_api.connect(key, config.billing)
    ledger = PayoutLedger(database)
    try:
        if args.action == "add":
            author = await _add(connection.client, ledger, handle, args.email, args.country)
            print(f"Author {handle}: Stripe Express account {author.account_id}.")
            models = _models_of(config, handle)
            if not models:
                print(f'No model names {handle} yet: add author = "{handle}" under [payouts.models.NAME].')
            print(f"Next: python -m proxy authors onboard {handle}, and send the author the link.")
            return 0
        author_or_none = ledger.author(handle)
        if author_or_none is None or author_or_none.account_id is None:
            raise CommandError(
                f"no author {handle!r} with a Stripe account: run authors add {handle} --email ... first"
            )
        url = await _onboarding_link(connection.client, config, author_or_none.account_id, args)
        print(f"Send this link to {handle}; it works once, for a few minutes (onboard again for another):")
        print(f"\n{url}\n")
        return 0
    except stripe.StripeError as error:
        raise CommandError(
            f"Stripe answered {error.http_status}: {error.user_message or type(error).__name__}"
        ) from None
    finally:
        await connection.aclose()


async def _add(
    client: stripe.StripeClient, ledger: PayoutLedger, handle: str, email: str, country: str
) -> Author:
    now = _now()
    author = ledger.add_author(handle, email, now)  # recorded first: a crash below is repaired by a rerun
    if author.account_id is None:
        account_id = await _existing_account(client, handle)
        if account_id is None:
            account = await client.v1.accounts.create_async(
                {
                    "type": "express",
                    "email": email,
                    "country": country,
                    "capabilities": {"transfers": {"requested": True}},
                    "metadata": {"modelfolio_author": handle},
                },
                options={"idempotency_key": f"modelfolio-author-{handle}"},
            )
            account_id = account.id
        ledger.set_account(handle, account_id, now)
    found = ledger.author(handle)
    assert found is not None
    return found


async def _existing_account(client: stripe.StripeClient, handle: str) -> str | None:
    """An account made for this author by an earlier run that died before recording it (past
    the 24 hours in which the idempotency key would return it)."""
    listed = await client.v1.accounts.list_async({"limit": 100})
    async for account in listed.auto_paging_iter():
        if metadata(account).get("modelfolio_author") == handle:
            return str(account.id)
    return None


async def _onboarding_link(
    client: stripe.StripeClient, config: Config, account_id: str, args: argparse.Namespace
) -> str:
    origin = config.public_origin + "/"
    for flag, value in (("--return-url", args.return_url), ("--refresh-url", args.refresh_url)):
        if value is not None:
            parse.http_url(value, flag)
    link = await client.v1.account_links.create_async(
        {
            "account": account_id,
            "type": "account_onboarding",
            "return_url": args.return_url or origin,
            "refresh_url": args.refresh_url or origin,
        }
    )
    return str(link.url)


def _list(config: Config, database: Database) -> int:
    balances = {balance.author: balance for balance in TransferOutbox(database).balances()}
    authors = PayoutLedger(database).authors()
    print(f"{'AUTHOR':<16}{'ACCOUNT':<26}{'PAYOUTS':<10}{'PAID':>12}{'PENDING':>12}  MODELS")
    for author in authors:
        balance = balances.get(author.handle)
        paid = _dollars(balance.transferred_cents if balance else 0)
        pending = _dollars(balance.pending_cents if balance else 0)
        enabled = "on" if author.payouts_enabled else "off"
        models = ", ".join(_models_of(config, author.handle)) or "-"
        print(
            f"{author.handle:<16}{author.account_id or '-':<26}{enabled:<10}{paid:>12}{pending:>12}  {models}"
        )
    missing = sorted({rule.author for rule in config.payouts.models.values()} - {a.handle for a in authors})
    for handle in missing:
        print(
            f"{handle:<16}{'- (authors add ' + handle + ')':<26}{'off':<10}{'$0.00':>12}{'$0.00':>12}  "
            f"{', '.join(_models_of(config, handle))}"
        )
    return 0


async def reconcile_payouts(config: Config, key: str, database: Database) -> TransferReport:
    """For `billing reconcile`: Stripe's transfers against the ledger's payouts."""
    connection = stripe_api.connect(key, config.billing)
    try:
        return await reconcile_transfers(connection.client, TransferOutbox(database))
    finally:
        await connection.aclose()


def _models_of(config: Config, handle: str) -> list[str]:
    return sorted(model for model, rule in config.payouts.models.items() if rule.author == handle)


def _dollars(cents: int) -> str:
    return f"${cents // 100}.{cents % 100:02d}"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")

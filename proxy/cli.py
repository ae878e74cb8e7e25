"""`python -m proxy`: run the proxy, or manage customers' API keys.

python -m proxy [--env NAME] [--host 127.0.0.1] [--port 8000]
python -m proxy keys create --customer cus_123
python -m proxy keys list
python -m proxy keys revoke <key-id>
python -m proxy keys rotate <key-id> [--grace-hours 24]
python -m proxy keys recover --customer cus_123 [--valid-hours 24]
python -m proxy caps set (--customer cus_123 | --key <key-id>) --monthly 25.00
python -m proxy caps clear (--customer cus_123 | --key <key-id>)
python -m proxy caps list
python -m proxy billing sync-catalog
python -m proxy billing reconcile [--since ISO] [--until ISO]
python -m proxy authors add|onboard|list
python -m proxy billing dead-letters [resend (--all | PREDICTION_ID ...)]
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Sequence
from pathlib import Path

from proxy.auth import check_customer_id, hash_key, new_api_key
from proxy.config import CONFIG_DIR, Config, load_config
from proxy.errors import CommandError, ConfigError, StorageUnavailable
from proxy.ledger import Ledger
from proxy.storage import Database, open_database


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        secrets_needed = args.command not in ("keys", "billing", "authors", "caps")  # billing checks its own
        config = load_config(args.config_dir, args.env, require_secrets=secrets_needed)
        if args.command == "keys":
            return _keys(args, config)
        if args.command == "caps":
            from proxy.billing.caps import run_caps

            return run_caps(args, config)
        if args.command == "billing":
            from proxy.billing.commands import run_billing

            return run_billing(args, config)
        if args.command == "authors":
            from proxy.billing.payouts.commands import run_authors

            return run_authors(args, config)
        return _serve(config, args.host, args.port)
    except ConfigError as error:
        print(f"modelfolio proxy: {error}", file=sys.stderr)
        return 2
    except (CommandError, StorageUnavailable) as error:
        print(f"modelfolio proxy: {error}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m proxy", parents=[_shared(top=True)], description="The modelfolio edge proxy."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    commands = parser.add_subparsers(dest="command")
    keys = commands.add_parser("keys", parents=[_shared()], help="manage customers' API keys")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", parents=[_shared()], help="make a key; shown once")
    create.add_argument("--customer", required=True, help="the Stripe customer id, cus_...")
    actions.add_parser("list", parents=[_shared()], help="list keys (never the keys themselves)")
    revoke = actions.add_parser("revoke", parents=[_shared()], help="revoke a key by its id")
    revoke.add_argument("key_id")
    rotate = actions.add_parser("rotate", parents=[_shared()], help="a new key; the old one works a while")
    rotate.add_argument("key_id")
    rotate.add_argument("--grace-hours", type=_hours, default=24.0, help="how long the old key still works")
    recover = actions.add_parser(
        "recover", parents=[_shared()], help="a one-time link giving a customer who lost their key a new one"
    )
    recover.add_argument("--customer", required=True, help="the Stripe customer id, cus_...")
    recover.add_argument("--valid-hours", type=_hours, default=24.0, help="how long the link works")
    caps = commands.add_parser("caps", parents=[_shared()], help="monthly spend caps on customers and keys")
    cap_actions = caps.add_subparsers(dest="action", required=True)
    for name, text in (("set", "set a monthly cap in USD"), ("clear", "remove the owner's cap")):
        cap = cap_actions.add_parser(name, parents=[_shared()], help=text)
        who = cap.add_mutually_exclusive_group(required=True)
        who.add_argument("--customer", help="a Stripe customer id, cus_...")
        who.add_argument("--key", help="an API key's id")
        if name == "set":
            cap.add_argument("--monthly", required=True, help='USD, whole cents: "25.00"')
    cap_actions.add_parser("list", parents=[_shared()], help="every cap, with this month's spend")
    billing = commands.add_parser("billing", parents=[_shared()], help="Stripe catalog and reconciliation")
    jobs = billing.add_subparsers(dest="action", required=True)
    jobs.add_parser("sync-catalog", parents=[_shared()], help="a meter and a metered price per model")
    check = jobs.add_parser("reconcile", parents=[_shared()], help="the ledger against Stripe's summaries")
    check.add_argument("--since", help="ISO 8601 start (default: 35 days ago)")
    check.add_argument("--until", help="ISO 8601 end (default: now)")
    check.add_argument("--customer", action="append", default=[], help="also check this cus_... id")
    dead = jobs.add_parser(
        "dead-letters", parents=[_shared()], help="meter events the worker gave up on; resend after a check"
    )
    dead.add_argument("what", nargs="?", choices=["list", "resend"], default="list")
    dead.add_argument("prediction_ids", nargs="*", help="the dead letters to resend (or --all)")
    dead.add_argument("--all", action="store_true", help="resend every dead letter")
    authors = commands.add_parser(
        "authors", parents=[_shared()], help="model authors paid via Stripe Connect"
    )
    people = authors.add_subparsers(dest="action", required=True)
    add = people.add_parser("add", parents=[_shared()], help="an Express account for an author")
    add.add_argument("handle", help="the author's handle, as [payouts.models.NAME] author names it")
    add.add_argument("--email", required=True, help="where Stripe writes to the author")
    add.add_argument("--country", default="US", help="the author's country, two letters (default US)")
    onboard = people.add_parser("onboard", parents=[_shared()], help="a new onboarding link for an author")
    onboard.add_argument("handle")
    onboard.add_argument("--return-url", help="where the author lands when done (default PUBLIC_ORIGIN)")
    onboard.add_argument("--refresh-url", help="where an expired link leads (default PUBLIC_ORIGIN)")
    people.add_parser("list", parents=[_shared()], help="authors, their models, paid and pending")
    return parser


def _shared(*, top: bool = False) -> argparse.ArgumentParser:
    """--env and --config-dir, accepted before or after a command. Below the top level they
    default to SUPPRESS, so an option given earlier is not overwritten by a default. (Each
    parser gets its own copy: argparse shares a parent's action objects.)"""
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument(
        "--env",
        default=None if top else argparse.SUPPRESS,
        help="the [env.NAME] of wrangler.toml to apply (default: MODELFOLIO_ENV)",
    )
    shared.add_argument(
        "--config-dir",
        type=Path,
        default=CONFIG_DIR if top else argparse.SUPPRESS,
        help="the folder holding wrangler.toml and .dev.vars",
    )
    return shared


def _hours(text: str) -> float:
    try:
        hours = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of hours, not {text!r}") from None
    if not 0 <= hours <= 7 * 24:
        raise argparse.ArgumentTypeError(f"from 0 to 168 hours (7 days), not {text}")
    return hours


def _key_lifecycle(args: argparse.Namespace, config: Config, database: Database) -> int:
    from proxy.billing import keys

    if args.action == "rotate":
        key_id, key, expires = keys.rotate(database, args.key_id, datetime.timedelta(hours=args.grace_hours))
        print(f"Created API key {key_id} to replace {args.key_id}, which works until {expires[:19]} UTC.")
        print(f"It is shown only this once:\n\n{key}\n")
        return 0
    try:
        customer = check_customer_id(args.customer)
    except CommandError as error:
        print(f"modelfolio proxy: {error}", file=sys.stderr)
        return 2
    link = keys.recovery_link(config, database, customer, datetime.timedelta(hours=args.valid_hours))
    print(
        f"A one-time link giving {customer} a new API key (their current keys stop working when it is "
        f"used), valid {args.valid_hours:g} hours. Send it to the email address Stripe has for {customer}:"
        f"\n\n{link}\n"
    )
    return 0


def _serve(config: Config, host: str, port: int) -> int:
    import uvicorn

    from proxy.app import create_app
    from proxy.logs import configure

    app = create_app(config)
    configure()
    print(f"modelfolio proxy: open http://{host}:{port}/", flush=True)
    # The app reads X-Forwarded-For itself, only when TRUST_X_FORWARDED_FOR says so, and
    # writes its own access log without client addresses.
    uvicorn.run(app, host=host, port=port, proxy_headers=False, access_log=False)
    return 0


def _keys(args: argparse.Namespace, config: Config) -> int:
    database = open_database(config.database_url)
    ledger = Ledger(database)
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
    try:
        if args.action == "create":
            try:
                customer = check_customer_id(args.customer)
            except CommandError as error:  # a wrong argument: a usage error, as argparse's are
                print(f"modelfolio proxy: {error}", file=sys.stderr)
                return 2
            from proxy.billing.keys import require_live_subscription

            standing = require_live_subscription(config, database, customer)
            key_id, key = new_api_key()
            ledger.add_api_key(key_id, hash_key(key), customer, now)
            print(f"Created API key {key_id} for {customer}. It is shown only this once:\n\n{key}\n")
            if standing == "unbilled":
                print("Billing is not configured (STRIPE_SECRET_KEY): its usage is kept in the ledger only.")
            return 0
        if args.action == "list":
            print(f"{'KEY ID':<14}{'CUSTOMER':<24}{'CREATED (UTC)':<22}STATUS")
            for record in ledger.api_keys():
                status = f"revoked {record.revoked_at[:19]}" if record.revoked_at else "active"
                if record.revoked_at is None and record.expires_at:
                    status = (
                        f"{'expired' if record.expires_at <= now else 'expires'} {record.expires_at[:19]}"
                    )
                print(f"{record.id:<14}{record.customer:<24}{record.created_at[:19]:<22}{status}")
            return 0
        if args.action in ("rotate", "recover"):
            return _key_lifecycle(args, config, database)
        if ledger.revoke_api_key(args.key_id, now):
            print(f"Revoked API key {args.key_id}.")
            return 0
        print(f"modelfolio proxy: no active key with id {args.key_id!r}", file=sys.stderr)
        return 1
    finally:
        database.close()

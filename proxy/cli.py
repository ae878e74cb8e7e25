"""`python -m proxy`: run the proxy, or manage customers' API keys.

python -m proxy [--env NAME] [--host 127.0.0.1] [--port 8000]
python -m proxy keys create --customer cus_123
python -m proxy keys list
python -m proxy keys revoke <key-id>
python -m proxy billing sync-catalog
python -m proxy billing reconcile [--since ISO] [--until ISO]
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Sequence
from pathlib import Path

from proxy.auth import check_customer_id, hash_key, new_api_key
from proxy.config import CONFIG_DIR, Config, load_config
from proxy.errors import ConfigError
from proxy.ledger import Ledger


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        secrets_needed = args.command not in ("keys", "billing")  # billing checks its own
        config = load_config(args.config_dir, args.env, require_secrets=secrets_needed)
        if args.command == "keys":
            return _keys(args, config)
        if args.command == "billing":
            from proxy.billing_cli import run_billing

            return run_billing(args, config)
        return _serve(config, args.host, args.port)
    except ConfigError as error:
        print(f"modelfolio proxy: {error}", file=sys.stderr)
        return 2


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
    billing = commands.add_parser("billing", parents=[_shared()], help="Stripe catalog and reconciliation")
    jobs = billing.add_subparsers(dest="action", required=True)
    jobs.add_parser("sync-catalog", parents=[_shared()], help="a meter and a metered price per model")
    check = jobs.add_parser("reconcile", parents=[_shared()], help="the ledger against Stripe's summaries")
    check.add_argument("--since", help="ISO 8601 start (default: 35 days ago)")
    check.add_argument("--until", help="ISO 8601 end (default: now)")
    check.add_argument("--customer", action="append", default=[], help="also check this cus_... id")
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
    ledger = Ledger(config.ledger_path)
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
    try:
        if args.action == "create":
            try:
                customer = check_customer_id(args.customer)
            except ValueError as error:
                print(f"modelfolio proxy: {error}", file=sys.stderr)
                return 2
            key_id, key = new_api_key()
            ledger.add_api_key(key_id, hash_key(key), customer, now)
            print(f"Created API key {key_id} for {customer}. It is shown only this once:\n\n{key}\n")
            return 0
        if args.action == "list":
            print(f"{'KEY ID':<14}{'CUSTOMER':<24}{'CREATED (UTC)':<22}STATUS")
            for record in ledger.api_keys():
                status = f"revoked {record.revoked_at[:19]}" if record.revoked_at else "active"
                print(f"{record.id:<14}{record.customer:<24}{record.created_at[:19]:<22}{status}")
            return 0
        if ledger.revoke_api_key(args.key_id, now):
            print(f"Revoked API key {args.key_id}.")
            return 0
        print(f"modelfolio proxy: no active key with id {args.key_id!r}", file=sys.stderr)
        return 1
    finally:
        ledger.close()

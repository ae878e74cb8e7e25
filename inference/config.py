"""The inference server's settings: read and checked once, at start.

What it shares with the proxy comes from the environment, under the names the proxy reads too, so
each value is set in one place (`wrangler-like-config/`, which `./dev run` exports; a Secret or
compose's env_file in a cluster): MODELFOLIO_OWNER (the proxy's OWNER), INFERENCE_TOKEN and
INFERENCE_WEBHOOK_SECRET. Everything else is a command-line option of its own.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from inference.errors import ConfigError
from inference.manifest import MODELS_DIR

OWNER_HANDLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Settings:
    token: str = field(repr=False)
    owner: str  # the portfolio owner's handle: models are addressed owner/name
    models_dir: Path = MODELS_DIR
    host: str = "127.0.0.1"
    port: int = 8001
    threads: int | None = None  # torch's or ONNX Runtime's intra-op threads; None: their defaults
    max_body_bytes: int = 16 * 1024 * 1024  # a 10 MB image as a base64 data URL fits
    max_image_pixels: int = 40_000_000
    max_upload_bytes: int = 100 * 1024 * 1024  # POST /v1/files, as Replicate allows
    max_wait_s: float = 60.0  # the longest `Prefer: wait=N` honoured, as Replicate does
    prediction_ttl_s: float = 3600.0  # how long finished predictions stay readable
    max_records: int = 10_000  # finished predictions kept at most, oldest dropped first
    webhook_secret: str | None = field(default=None, repr=False)  # whsec_<base64>; None: no webhooks
    webhook_hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")  # the only hosts we call
    webhook_backoff_s: float = 0.5  # the final event's retries wait 0.5, 1, 2, 4, 8 s
    fetch_hosts: tuple[str, ...] = ()  # hosts whose http(s) URLs may be inputs; none by default
    notify_url: str | None = None  # every finished prediction is also sent here (the proxy bills)
    trust_precision: bool = False  # run a manifest's bf16/fp16 even where no agreement check passed


def settings_from(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="python -m inference", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op threads of torch or ONNX Runtime (default: theirs)",
    )
    parser.add_argument(
        "--notify-url",
        default=environ.get("INFERENCE_NOTIFY_URL") or None,
        help="send every finished prediction here, signed (the proxy's "
        "/internal/inference-events); needs INFERENCE_WEBHOOK_SECRET",
    )
    parser.add_argument(
        "--fetch-hosts",
        default="",
        help="comma-separated hosts whose http(s) URLs may be inputs (default: none)",
    )
    parser.add_argument(
        "--webhook-hosts",
        default="127.0.0.1,localhost,::1",
        help="comma-separated hosts webhooks may be sent to (default: loopback)",
    )
    parser.add_argument(
        "--trust-precision",
        action="store_true",
        help="run each model in its manifest's precision even without a passing "
        "check against fp32 (benchmarks of random weights only)",
    )
    args = parser.parse_args(argv)
    token = environ.get("INFERENCE_TOKEN", "")
    if not token:
        raise ConfigError(
            "INFERENCE_TOKEN is not set: the inference server needs the shared secret the proxy "
            "sends. Set it in the environment (./dev run generates one into "
            "wrangler-like-config/.dev.vars)."
        )
    owner = environ.get("MODELFOLIO_OWNER", "")
    if not OWNER_HANDLE.fullmatch(owner):
        raise ConfigError(
            "MODELFOLIO_OWNER must be the portfolio owner's handle (OWNER in wrangler-like-config/"
            f"wrangler.toml, which ./dev run exports), got {owner!r}"
        )
    if not args.models_dir.is_dir():
        raise ConfigError(f"--models-dir {args.models_dir} is not a folder")
    hosts = tuple(h.strip() for h in args.webhook_hosts.split(",") if h.strip())
    secret = environ.get("INFERENCE_WEBHOOK_SECRET") or None
    if args.notify_url and not secret:
        raise ConfigError("--notify-url needs INFERENCE_WEBHOOK_SECRET (whsec_<base64>) to sign events")
    return Settings(
        token=token,
        owner=owner,
        models_dir=args.models_dir,
        host=args.host,
        port=args.port,
        threads=args.threads,
        trust_precision=args.trust_precision,
        webhook_secret=secret,
        webhook_hosts=hosts,
        notify_url=args.notify_url,
        fetch_hosts=tuple(h.strip() for h in args.fetch_hosts.split(",") if h.strip()),
    )

"""`python -m proxy`: start-up, and the API-key commands an operator runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from proxy.cli import main
from proxy.ledger import Ledger
from proxy.storage import open_database
from tests.support.paths import REPO

TOML = """
name = "cli-test"
main = "proxy/app.py"
compatibility_date = "2025-06-01"

[vars]
OWNER = "modelfolio"
UPSTREAM_URL = "http://127.0.0.1:9"
PUBLIC_ORIGIN = "http://127.0.0.1:8000"
SITE_DIR = "dist"
LEDGER_PATH = "var/ledger.sqlite3"
"""


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "wrangler-like-config"
    folder.mkdir()
    (folder / "wrangler.toml").write_text(TOML)
    return folder


def clean_environment() -> dict[str, str]:
    secrets = ("INFERENCE_TOKEN", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET")
    return {k: v for k, v in os.environ.items() if k not in secrets and not k.startswith("MODELFOLIO_")}


def test_a_key_is_printed_once_listed_by_id_and_revoked(
    config_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "--customer", "cus_123", "--config-dir", str(config_dir)]) == 0
    created = capsys.readouterr().out
    key = next(line for line in created.splitlines() if line.startswith("mf_"))
    key_id = key.split("_")[1]
    assert "shown only this once" in created

    assert main(["--config-dir", str(config_dir), "keys", "list"]) == 0
    listed = capsys.readouterr().out
    assert key_id in listed and "cus_123" in listed and "active" in listed and key not in listed

    assert main(["keys", "revoke", key_id, "--config-dir", str(config_dir)]) == 0
    assert main(["keys", "revoke", key_id, "--config-dir", str(config_dir)]) == 1
    capsys.readouterr()
    main(["keys", "list", "--config-dir", str(config_dir)])
    assert "revoked" in capsys.readouterr().out
    database = open_database(f"sqlite:///{config_dir.parent / 'var' / 'ledger.sqlite3'}")
    ledger = Ledger(database)
    try:
        assert ledger.api_key(key_id).revoked_at is not None
    finally:
        database.close()


def test_a_key_for_something_that_is_not_a_stripe_customer_is_refused(
    config_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "--customer", "alice", "--config-dir", str(config_dir)]) == 2
    assert "cus_" in capsys.readouterr().err


def test_missing_inference_token_stops_start_up_naming_it(config_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "--config-dir", str(config_dir), "--port", "9"],
        check=False,
        cwd=REPO,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "INFERENCE_TOKEN is not set" in done.stderr and ".dev.vars" in done.stderr


def test_the_proxy_starts_prints_its_url_and_answers(config_dir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    environment = {**clean_environment(), "INFERENCE_TOKEN": "cli-test-token-77"}
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "--config-dir", str(config_dir), "--port", str(port)],
        cwd=REPO,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline().strip() == f"modelfolio proxy: open http://127.0.0.1:{port}/"
        for line in process.stderr:  # uvicorn says when it accepts connections
            if "Application startup complete" in line:
                break
        response = httpx.get(f"http://127.0.0.1:{port}/healthz")
        assert response.json() == {"status": "ok"}
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=30)
    request_lines = [line for line in errors.splitlines() if '"event":"request"' in line]
    assert request_lines and "cli-test-token-77" not in errors and "127.0.0.1:" not in request_lines[0]

"""Real `python -m proxy` processes for the tests that kill one, or run several side by side."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx

from proxy.config import REPO_ROOT
from tests.support.billing import wait_until
from tests.support.servers import free_port


@contextlib.contextmanager
def proxy_process(
    env: dict[str, str], config_dir: Path, log: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    process, url = _started(env, config_dir, log)
    try:
        yield process, url
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(30)


def _started(
    env: dict[str, str], config_dir: Path, log: Path, tries: int = 3
) -> tuple[subprocess.Popen[bytes], str]:
    """A proxy answering /readyz. Its port is free when picked, but another process's connection
    can take it before the proxy binds it (tests run many clients): then it starts on another."""
    for attempt in range(tries):
        port, logged = free_port(), log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "proxy", "--config-dir", str(config_dir), "--port", str(port)],
                cwd=REPO_ROOT,
                env=env,
                stdout=out,
                stderr=out,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda p=process, u=url: ready(p, u), "the proxy's /readyz", timeout_s=60)
            return process, url
        except AssertionError:
            if process.poll() is None:
                process.kill()
                process.wait(30)
            with log.open("rb") as written:
                written.seek(logged)
                taken = b"address already in use" in written.read().lower()
            if not taken or attempt + 1 == tries:
                raise
    raise AssertionError("unreachable")


def ready(process: subprocess.Popen[bytes], url: str) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"the proxy exited with {process.returncode}")
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def reconcile(env: dict[str, str], config_dir: Path) -> subprocess.CompletedProcess[str]:
    """`python -m proxy billing reconcile` as the owner runs it, in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "proxy", "billing", "reconcile", "--config-dir", str(config_dir)],
        cwd=REPO_ROOT,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )

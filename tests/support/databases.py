"""Throwaway PostgreSQL and Redis servers on loopback ports, from the installed binaries
(`./dev test` installs Debian's postgresql and redis-server when missing): real servers, started
by the tests and gone with them."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

from tests.support.servers import free_port


def _postgres_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))[-1:]), None
    )
    if found is None:
        raise RuntimeError(
            f"PostgreSQL's {name} is not installed: apt-get install postgresql (./dev test does)"
        )
    return found


def _as_postgres_user() -> list[str]:
    """initdb and postgres refuse to run as root: as root, they run as the `postgres` user."""
    if os.geteuid() != 0:
        return []
    pwd.getpwnam("postgres")  # the Debian package makes it
    return ["runuser", "-u", "postgres", "--"]


class PostgresServer:
    """A PostgreSQL server on a free 127.0.0.1 port, trusting local connections; `url` is
    `postgresql://postgres@127.0.0.1:<port>` (add a database name). It can be stopped and started
    again on the same port and data, for outage tests."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="modelfolio-pg-"))
        data = self.folder / "data"
        run_as = _as_postgres_user()
        if run_as:
            shutil.chown(self.folder, "postgres", "postgres")
        initdb = [
            *run_as,
            _postgres_bin("initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
        ]
        subprocess.run(initdb, check=True, capture_output=True)
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}"
        self._pg_ctl = [*run_as, _postgres_bin("pg_ctl"), "-D", str(data)]

    def start(self) -> None:
        where = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder}"
        options = f"{where} -c fsync=off -c max_connections=300"  # fsync off: throwaway data
        log = str(self.folder / "log")
        subprocess.run(
            [*self._pg_ctl, "-o", options, "-l", log, "-w", "start"], check=True, capture_output=True
        )

    def stop(self) -> None:
        subprocess.run([*self._pg_ctl, "-m", "immediate", "stop"], capture_output=True, check=False)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.remove()


_created = iter(range(1, 1_000_000))


def new_database(server: str) -> str:
    """A new, empty database on `server`; its URL."""
    name = f"t{os.getpid()}_{next(_created)}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{server}/{name}"


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A Redis server on a free 127.0.0.1 port, in memory only; yields `redis://127.0.0.1:<port>/0`."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: apt-get install redis-server (./dev test does)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, process)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")

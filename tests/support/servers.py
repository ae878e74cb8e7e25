"""Real uvicorn servers on 127.0.0.1 for tests: each on a socket bound to a free port first,
so there is no race for the port and the base URL is known before the server starts."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp


def bound_socket() -> socket.socket:
    """A socket on a free 127.0.0.1 port: its URL is known before the server that will use it."""
    # IPPROTO_TCP explicitly: with proto=0 asyncio never sets TCP_NODELAY on accepted connections,
    # and every response waits ~40 ms for delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    """A port free now on 127.0.0.1, for a server in another process to bind."""
    with contextlib.closing(bound_socket()) as sock:
        return int(sock.getsockname()[1])


def url_of(sock: socket.socket) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextlib.contextmanager
def serve(app: ASGIApp, *, timeout: float = 60.0, sock: socket.socket | None = None) -> Iterator[str]:
    """Runs `app` under uvicorn in a thread; yields its base URL once it accepts requests."""
    sock = sock or bound_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    # The test process keeps its own signal handlers (Ctrl-C stops pytest, not one server).
    server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    started = threading.Event()

    def watch() -> None:
        while thread.is_alive() and not server.started:
            thread.join(0.01)
        started.set()

    threading.Thread(target=watch, daemon=True).start()
    if not started.wait(timeout) or not server.started:
        server.should_exit = True
        raise RuntimeError("test server did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()

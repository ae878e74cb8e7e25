"""Server processes: start in their own session, measure from /proc, and always kill."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree(root: int) -> list[int]:
    """`root` and all its descendants, from /proc (psutil is not needed)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat:
                children.setdefault(int(stat[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: [state, ppid, ...]."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        stat = _stat(pid)
        if stat:
            total += int(stat[11]) + int(stat[12])  # utime + stime
    return total / TICKS


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    return total


def machine_busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine since boot (all cores)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / TICKS


def other_load(server_pids: list[int], work: Callable[[], T]) -> tuple[T, float]:
    """Runs `work`; returns its result and the cores that processes other than the server tree
    and this one kept busy meanwhile (other engineers' jobs on a shared machine)."""
    busy, own, server = machine_busy_seconds(), time.process_time(), cpu_seconds(server_pids)
    started = time.perf_counter()
    result = work()
    elapsed = time.perf_counter() - started
    elsewhere = (
        (machine_busy_seconds() - busy) - (time.process_time() - own) - (cpu_seconds(server_pids) - server)
    )
    return result, max(0.0, elsewhere / elapsed)


def wait_for_quiet(server_pids: list[int], limit_s: float, threshold: float = 0.15) -> float:
    """Waits (up to `limit_s`) for two quiet seconds in a row; returns the seconds waited."""
    started, quiet = time.perf_counter(), 0
    while quiet < 2 and time.perf_counter() - started < limit_s:
        _, load = other_load(server_pids, lambda: time.sleep(1.0))
        quiet = quiet + 1 if load < threshold else 0
    return time.perf_counter() - started


class Server:
    """One server under test, started as a process group; tracks its tree's peak RSS."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self._log = log.open("wb")
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            argv,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.peak_rss = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def pids(self) -> list[int]:
        return tree(self.process.pid)

    def _sample(self) -> None:
        while not self._stop.wait(0.25):
            self.peak_rss = max(self.peak_rss, rss_bytes(self.pids()))

    def idle_cpu_percent(self, seconds: float = 3.0) -> float:
        """Share of one core the server tree burns with no request in flight."""
        pids = self.pids()
        before, started = cpu_seconds(pids), time.perf_counter()
        time.sleep(seconds)
        return 100 * (cpu_seconds(pids) - before) / (time.perf_counter() - started)

    @property
    def exited(self) -> bool:
        return self.process.poll() is not None

    def stop(self) -> None:
        self._stop.set()
        pids = self.pids()
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if self.process.poll() is not None and not _alive(pids):
                break
            _signal_group(self.process.pid, sig)
            for pid in pids:  # children that left the group (Cog's worker, LitServe's)
                _signal(pid, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and (self.process.poll() is None or _alive(pids)):
                time.sleep(0.05)
        self._log.close()


def _alive(pids: list[int]) -> bool:
    return any((stat := _stat(pid)) is not None and stat[0] != "Z" for pid in pids)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)

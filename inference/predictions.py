"""A prediction's record, its lifecycle, and the bounded store that keeps finished ones a while."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from inference.registry import Models
    from inference.uploads import Uploads

TERMINAL = ("succeeded", "failed", "canceled")
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def new_id() -> str:
    """26 random lowercase letters and digits, like Replicate's prediction ids: one draw from the
    OS's randomness, not one per character (26 system calls showed in profiles under load)."""
    number, chars = secrets.randbelow(len(_ALPHABET) ** 26), []
    for _ in range(26):
        number, digit = divmod(number, len(_ALPHABET))
        chars.append(_ALPHABET[digit])
    return "".join(chars)


def _now() -> str:
    # Always with microseconds: timestamps of one width sort as text, which list pages rely on.
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(eq=False)
class Prediction:
    id: str
    model: str  # owner/name
    version: str
    input: dict[str, Any]  # as the caller sent it (data URLs are abbreviated when shown)
    status: str = "starting"
    output: Any = None
    error: str | None = None
    logs: str = ""
    created_at: str = field(default_factory=_now)
    started_at: str | None = None
    completed_at: str | None = None
    predict_time: float | None = None
    finished_at: float | None = None  # monotonic, for expiry
    base_url: str = ""  # where the caller reached us: the prediction's urls point there
    webhook: str | None = None
    webhook_events: frozenset[str] = frozenset()
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def start(self) -> None:
        self.status = "processing"
        self.started_at = _now()

    def finish(
        self, status: str, *, output: Any = None, error: str | None = None, predict_time: float | None = None
    ) -> bool:
        """Moves to a terminal state once; later calls (a cancel racing a result) change nothing."""
        if self.terminal:
            return False
        self.status, self.output, self.error = status, output, error
        self.predict_time = predict_time
        self.completed_at = _now()
        self.finished_at = time.monotonic()
        self.done.set()
        return True

    def to_json(self, base_url: str) -> dict[str, Any]:
        metrics = {} if self.predict_time is None else {"predict_time": round(self.predict_time, 6)}
        return {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "input": {k: _abbreviate(v) for k, v in self.input.items()},
            "output": self.output,
            "error": self.error,
            "logs": self.logs,
            "status": self.status,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "metrics": metrics,
            "urls": urls_of(base_url, self.id),
        }


def urls_of(base_url: str, prediction_id: str) -> dict[str, str]:
    url = f"{base_url.rstrip('/')}/v1/predictions/{prediction_id}"
    return {"get": url, "cancel": f"{url}/cancel"}


def _abbreviate(value: Any) -> Any:
    # Echoing a megabyte data URL on every poll would cost more than the prediction.
    if isinstance(value, str) and value.startswith("data:") and len(value) > 256:
        return f"{value[: value.find(',') + 1]}... ({len(value)} characters)"
    return value


class PredictionStore:
    """Every live prediction, plus finished ones for `ttl_s` seconds, at most `max_finished`."""

    def __init__(
        self, *, ttl_s: float, max_finished: int, on_finish: Callable[[Prediction], None] = lambda p: None
    ) -> None:
        self._on_finish = on_finish
        self._ttl_s = ttl_s
        self._max_finished = max_finished
        self._records: dict[str, Prediction] = {}
        self._finished: deque[Prediction] = deque()  # in the order they finished

    def add(self, prediction: Prediction) -> None:
        self._records[prediction.id] = prediction

    def get(self, prediction_id: str) -> Prediction | None:
        self._expire()
        return self._records.get(prediction_id)

    def finish(self, prediction: Prediction, status: str, **result: Any) -> bool:
        """Ends a prediction once (see Prediction.finish) and schedules its expiry."""
        if not prediction.finish(status, **result):
            return False
        self._on_finish(prediction)
        self._finished.append(prediction)
        self._expire()
        return True

    def __len__(self) -> int:
        return len(self._records)

    def all(self) -> list[Prediction]:
        """Every prediction still kept, in no particular order (GET /v1/predictions pages them)."""
        self._expire()
        return list(self._records.values())

    def _expire(self) -> None:
        cutoff = time.monotonic() - self._ttl_s
        while self._finished and (
            len(self._finished) > self._max_finished or (self._finished[0].finished_at or 0.0) < cutoff
        ):
            self._records.pop(self._finished.popleft().id, None)


class RemoteRecords(Protocol):
    """Predictions that other processes serving the same API own (Ray Serve's replicas: see
    inference/ray_records.py). A lone server has none."""

    async def open(self, models: Models) -> None:
        """Starts taking orders for this process: cancels of its predictions (`models.cancel_here`)
        and predictions handed over from a process that stopped before running them."""

    def publish(self, prediction: Prediction) -> None:
        """A prediction of this process changed; must not block. One still `starting` is kept
        whole, with its input, so that another process can run it if this one stops."""

    async def synced(self) -> None:
        """Returns once every record published so far can be read from other processes."""

    async def get(self, prediction_id: str) -> dict[str, Any] | None:
        """The latest record of a prediction another process owns, or None."""

    async def cancel(self, prediction_id: str) -> dict[str, Any] | None:
        """Cancels a prediction another process owns, there; its record afterwards, or None."""

    def uploads(self, max_bytes: int) -> Uploads:
        """Where uploaded files are kept so that every process reads them."""

    async def close(self) -> None: ...

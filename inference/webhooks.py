"""Webhooks: a prediction's `start` and `completed` events, POSTed to the URL its creator gave,
signed with the Standard Webhooks scheme (`webhook-id`, `webhook-timestamp`, `webhook-signature`).

Only hosts on an allow-list are called (default: loopback, where the proxy listens), so a caller
cannot make this server send requests into the network. The final event is retried with backoff
until the receiver answers 2xx or the attempts run out; `start` is sent once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from standardwebhooks import Webhook

from inference.errors import InvalidInput
from inference.predictions import Prediction

log = logging.getLogger("inference")
EVENTS = ("start", "output", "logs", "completed")


def check_request(
    url: Any, events: Any, *, secret: str | None, allowed_hosts: Iterable[str]
) -> tuple[str, frozenset[str]]:
    """Validates a create's `webhook` and `webhook_events_filter`; returns them normalised."""
    if (
        not isinstance(url, str)
        or urlsplit(url).scheme not in ("http", "https")
        or not urlsplit(url).hostname
    ):
        raise InvalidInput(f"'webhook' must be an http(s) URL, got {url!r:.60}")
    if secret is None:
        raise InvalidInput("this server has no webhook signing secret configured, so it sends no webhooks")
    host = urlsplit(url).hostname
    if host not in set(allowed_hosts):
        raise InvalidInput(f"webhook host {host!r} is not on this server's allow-list")
    if events is None:
        return url, frozenset(EVENTS)
    if not isinstance(events, list) or not all(e in EVENTS for e in events):
        raise InvalidInput(f"'webhook_events_filter' must be a list drawn from {list(EVENTS)}")
    return url, frozenset(events)


class Webhooks:
    def __init__(
        self, secret: str, *, attempts: int = 6, backoff_s: float = 0.5, timeout_s: float = 10.0
    ) -> None:
        self._signer = Webhook(secret)
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._client = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)
        self._tasks: set[asyncio.Task[None]] = set()
        # The newest delivery to each (url, prediction): the next one waits for it, so a receiver
        # sees a prediction's events in the order they happened ("start" before "completed").
        self._latest: dict[tuple[str, str], asyncio.Task[None]] = {}

    def notify(self, prediction: Prediction, event: str) -> None:
        if prediction.webhook is None or event not in prediction.webhook_events:
            return
        self.send(prediction.webhook, prediction, event)

    def send(self, url: str, prediction: Prediction, event: str) -> None:
        body = json.dumps(prediction.to_json(prediction.base_url))
        attempts = self._attempts if event == "completed" else 1
        key = (url, prediction.id)
        task = asyncio.get_running_loop().create_task(
            self._deliver(url, f"{prediction.id}-{event}", body, attempts, after=self._latest.get(key))
        )
        self._tasks.add(task)  # keep a reference until done, or the task may be collected
        self._latest[key] = task

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            if self._latest.get(key) is task:
                del self._latest[key]

        task.add_done_callback(done)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()

    async def _deliver(
        self, url: str, message_id: str, body: str, attempts: int, *, after: asyncio.Task[None] | None
    ) -> None:
        if after is not None:
            await asyncio.wait([after])  # delivered, given up or canceled: this one goes next
        for attempt in range(attempts):
            now = datetime.now(UTC)
            headers = {
                "content-type": "application/json",
                "webhook-id": message_id,  # the same on every retry: receivers dedupe on it
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": self._signer.sign(message_id, now, body),
            }
            try:
                response = await self._client.post(url, content=body, headers=headers)
                if response.is_success:
                    return
                problem = f"answered {response.status_code}"
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            log.warning(
                "webhook not delivered",
                extra={"fields": {"webhook_id": message_id, "attempt": attempt + 1, "problem": problem}},
            )
            if attempt + 1 < attempts:
                await asyncio.sleep(self._backoff_s * 2**attempt)
        log.error("webhook given up", extra={"fields": {"webhook_id": message_id, "attempts": attempts}})

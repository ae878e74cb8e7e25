"""The result cache: an identical request to a model (same version, same input) is answered with
the stored output, without running the model again. Off by default; on per model in wrangler.toml
(`[cache.models.<name>]`, a TTL and the fraction of the original compute a hit is billed).

The key hashes the request's meaning: the model, its version, and every input, a file input by
the sha256 of its decoded bytes (so the same picture as a data URL or as an upload is one key).
A hit is a new prediction, with its own id, readable only by its caller, marked `"cached": true`,
and billed as its own kind of usage line ("cache_hit") at the configured fraction of the
original's milliseconds, so the ledger and Stripe's meters still agree to the millisecond.

What a hit can tell a caller: that someone asked this model the very same question within the TTL
(a hit is faster and cheaper than a miss). It cannot tell who, when, or anything else they sent:
outputs are stored by key alone, with no caller, and every hit gets a fresh id.

Redis when `[limits] redis_url` is set (shared by every proxy process), else a bounded LRU in
this process.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from proxy.config import CacheRule
from proxy.logs import log_event

PENDING_S = 3600  # how long a created prediction waits to be seen succeeded and stored
_FILE_URL = re.compile(r"https?://[^/]+/v1/files/([a-z0-9]{26})")


@dataclass(frozen=True)
class Hit:
    output: Any
    version: str
    predict_time_ms: int  # of the prediction that computed it


class _Memory:
    """A bounded LRU with expiry, for one process."""

    def __init__(self, max_entries: int) -> None:
        self._entries: collections.OrderedDict[str, tuple[float, str]] = collections.OrderedDict()
        self._max = max_entries

    async def get(self, key: str) -> str | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            self._entries.pop(key, None)
            return None
        self._entries.move_to_end(key)
        return entry[1]

    async def set(self, key: str, value: str, ttl_s: int) -> None:
        self._entries[key] = (time.monotonic() + ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def delete(self, key: str) -> None:
        self._entries.pop(key, None)


class _Redis:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def get(self, key: str) -> str | None:
        value = await self._redis.get(key)
        return value.decode() if isinstance(value, bytes) else value

    async def set(self, key: str, value: str, ttl_s: int) -> None:
        await self._redis.set(key, value, ex=ttl_s)

    async def delete(self, key: str) -> None:
        await self._redis.delete(key)


class ResultCache:
    def __init__(
        self, rules: dict[str, CacheRule], redis: Redis | None, *, max_entries: int = 10_000
    ) -> None:
        self.rules = rules  # by model name, owner/name
        self._store: _Memory | _Redis = _Redis(redis) if redis is not None else _Memory(max_entries)
        self.counted: Callable[[str], None] = lambda outcome: None  # "hit" or "miss" (proxy/metrics.py)

    def rule(self, model: str | None) -> CacheRule | None:
        return self.rules.get(model) if model else None

    def key(
        self, model: str, version: str, inputs: Any, upload_hash: Callable[[str], str | None]
    ) -> str | None:
        """The request's key, or None when it cannot be cached (an input that is a URL the proxy
        did not issue, an upload it does not know)."""
        if not isinstance(inputs, dict):
            return None
        canonical = {}
        for name, value in inputs.items():
            if isinstance(value, str) and value.startswith("data:"):
                digest = _data_url_digest(value)
            elif isinstance(value, str) and (match := _FILE_URL.fullmatch(value)):
                digest = upload_hash(match.group(1))
            elif isinstance(value, str) and value.startswith(("http://", "https://")):
                digest = None
            else:
                canonical[name] = value
                continue
            if digest is None:
                return None
            canonical[name] = f"sha256:{digest}"
        text = json.dumps([model, version, canonical], sort_keys=True, separators=(",", ":"))
        return "modelfolio:cache:" + hashlib.sha256(text.encode()).hexdigest()

    async def lookup(self, key: str) -> Hit | None:
        try:
            stored = await self._store.get(key)
        except RedisError as error:  # a cache that cannot be read is a miss, not an outage
            log_event("cache_unavailable", error=type(error).__name__)
            stored = None
        self.counted("hit" if stored else "miss")
        if stored is None:
            return None
        value = json.loads(stored)
        return Hit(value["output"], value["version"], int(value["predict_time_ms"]))

    async def expect(self, prediction_id: str, key: str) -> None:
        """Remembers which key a just-created prediction answers, until it is seen succeeded."""
        try:
            await self._store.set(f"modelfolio:cache-pending:{prediction_id}", key, PENDING_S)
        except RedisError as error:
            log_event("cache_unavailable", error=type(error).__name__)

    async def keep(self, prediction: dict[str, Any], predict_time_ms: int) -> None:
        """Stores a succeeded prediction's output under the key its create was given, if any."""
        rule = self.rule(prediction.get("model"))
        if rule is None or not isinstance(prediction.get("id"), str):
            return
        pending = f"modelfolio:cache-pending:{prediction['id']}"
        try:
            key = await self._store.get(pending)
            if key is not None:
                value = {
                    "output": prediction.get("output"),
                    "version": prediction.get("version"),
                    "predict_time_ms": predict_time_ms,
                }
                await self._store.set(key, json.dumps(value), rule.ttl_s)
                await self._store.delete(pending)
        except RedisError as error:
            log_event("cache_unavailable", error=type(error).__name__)


def _data_url_digest(url: str) -> str | None:
    header, _, payload = url.partition(",")
    if ";base64" not in header:
        return None
    try:
        return hashlib.sha256(base64.b64decode(payload, validate=True)).hexdigest()
    except (binascii.Error, ValueError):
        return None

"""The last record the proxy saw of each prediction, kept in the ledger, which outlives the
model server's hour: every prediction answer that passes through the proxy is remembered, so a
listed or fetched prediction stays readable after the model server forgets it. A record that was
not finished when the model server lost it (a restart) is answered as failed, saying so, rather
than as `starting` forever: a client's `wait()` must end."""

from __future__ import annotations

import datetime
import json
from typing import TYPE_CHECKING, Any

from anyio import to_thread
from starlette.requests import Request

from proxy.auth import Caller
from proxy.errors import BadGateway, RequestError, Unavailable
from proxy.forward import hide_upstream, rewrite_urls

if TYPE_CHECKING:
    from proxy.gateway import Gateway

TERMINAL = ("succeeded", "failed", "canceled")
REMEMBERED = 10_000  # predictions whose last written status this process keeps in mind
MAX_RECORD_BYTES = 256 * 1024  # a larger output (a big file as a data URL) is not kept
LOST = (
    "the model server no longer holds this prediction: it restarted before the prediction "
    "finished. Create it again."
)


def _terminal(record: dict[str, Any]) -> bool:
    return record.get("status") in TERMINAL


async def remember(gateway: Gateway, prediction: Any) -> None:
    """Keeps the model server's latest record of a prediction (blocking work off the loop)."""
    if not isinstance(prediction, dict) or not isinstance(prediction.get("id"), str):
        return
    status, seen = str(prediction.get("status")), gateway.remembered
    if seen.get(prediction["id"]) == status:
        # Written already with this status: a finished record never changes, a running one only
        # in what its next status will carry. Every poll of it would otherwise be a write.
        seen.move_to_end(prediction["id"])
        return
    text = json.dumps(prediction)
    if len(text) > MAX_RECORD_BYTES:
        text = json.dumps({**prediction, "output": None, "data_removed": True})
    await to_thread.run_sync(
        gateway.ledger.remember_prediction, prediction["id"], text, _terminal(prediction), gateway.now()
    )
    seen[prediction["id"]] = status
    if len(seen) > REMEMBERED:
        seen.popitem(last=False)


async def last_known(gateway: Gateway, prediction_id: str) -> dict[str, Any] | None:
    """What the proxy last saw of a prediction the model server no longer has; None if it saw
    nothing."""
    stored = await to_thread.run_sync(gateway.ledger.prediction_record, prediction_id)
    if stored is None:
        return None
    record: dict[str, Any] = json.loads(stored)
    if not _terminal(record):
        record = await _lost(gateway, record)
    return record


async def _lost(gateway: Gateway, record: dict[str, Any]) -> dict[str, Any]:
    lost = {**record, "status": "failed", "error": LOST, "output": None, "completed_at": now_z(gateway)}
    await remember(gateway, lost)
    return lost


def now_z(gateway: Gateway) -> str:
    return gateway.clock().astimezone(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


async def current(
    gateway: Gateway, prediction_id: str, model: str, created_at: str, stored: str | None
) -> dict[str, Any]:
    """A listed prediction as it is now: its finished record, else the model server's answer,
    else what was last seen (marked lost if it never finished)."""
    record: dict[str, Any] | None = json.loads(stored) if stored else None
    if record is not None and _terminal(record):
        return record
    if record is None:
        # Answered from the result cache: the model server never saw it; the proxy keeps it.
        cached = await to_thread.run_sync(gateway.ledger.cached_prediction, prediction_id)
        if cached is not None:
            found: dict[str, Any] = json.loads(cached[1])
            return found
    try:
        reply = await gateway.upstream.send("GET", f"/v1/predictions/{prediction_id}")
    except RequestError:
        if record is None:
            raise
        return record  # the model server is unreachable: show the last record, unchanged
    if reply.ok:
        fresh = reply.json()
        if isinstance(fresh, dict):
            await remember(gateway, fresh)
            return fresh
        raise BadGateway("the model server answered a prediction that is not a JSON object")
    if reply.status != 404:  # loading or overloaded: it may still have the prediction
        if record is None:
            raise Unavailable("the model server cannot answer right now; try again shortly", retry_after=5)
        return record
    if record is None:
        # Made before the proxy kept records, and gone from the model server.
        usage = await to_thread.run_sync(gateway.billing.usage_store.usage_for, prediction_id)
        record = {
            "id": prediction_id,
            "model": model,
            "version": (usage.version if usage else None) or "",
            "input": {},
            "status": "succeeded" if usage else "failed",
            "created_at": created_at.replace("+00:00", "Z"),
            "data_removed": True,
        }
        if usage:
            await remember(gateway, record)
            return record
    return await _lost(gateway, record)


async def present(
    gateway: Gateway, request: Request, record: dict[str, Any], caller: Caller, model: str | None
) -> dict[str, Any]:
    """A prediction as its caller sees it: billed if it succeeded, with the proxy's URLs."""
    prediction = await gateway.billing.bill(record, caller, model)
    here = str(request.base_url).rstrip("/")
    shown: dict[str, Any] = hide_upstream(prediction, gateway.config.upstream_url, here)
    return rewrite_urls(shown, here)


async def remember_upload(gateway: Gateway, file_object: dict[str, Any]) -> None:
    expires_at = file_object.get("expires_at")
    if isinstance(expires_at, str):
        await to_thread.run_sync(
            gateway.ledger.remember_upload, file_object["id"], json.dumps(file_object), expires_at
        )


async def forget_upload(gateway: Gateway, file_id: str) -> None:
    await to_thread.run_sync(gateway.ledger.forget_upload, file_id)

"""Talking to the inference server: the token goes in, the caller's own credentials never do,
request bodies stream through under a byte limit, and transport failures become errors a
caller can act on."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.responses import Response

from proxy.errors import BadGateway, GatewayTimeout, NotFound, PayloadTooLarge, Unavailable
from proxy.logs import log_event

# Only these caller headers travel upstream; Authorization is always replaced, cookies and
# forwarding headers never go.
FORWARDED_REQUEST_HEADERS = ("content-type", "content-length", "prefer", "cancel-after", "accept")
# Only these upstream headers come back; anything else stays between proxy and model server.
RETURNED_RESPONSE_HEADERS = ("content-type", "retry-after", "preference-applied")
UNREACHABLE = "the model server is not reachable right now; try again in a few seconds"
RETRY_AFTER_S = 5
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def segment(value: str, what: str) -> str:
    """A path segment safe to put in an upstream URL: no '..', no '/', no surprises."""
    if not _SEGMENT.fullmatch(value):
        raise NotFound(f"{what} not found")
    return value


@dataclass(frozen=True)
class UpstreamReply:
    status: int
    headers: httpx.Headers
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise BadGateway("the model server sent an answer the proxy could not read") from None

    def passthrough(self) -> Response:
        """The reply as the caller gets it, status and body unchanged."""
        headers = {k: self.headers[k] for k in RETURNED_RESPONSE_HEADERS if k in self.headers}
        return Response(self.body, status_code=self.status, headers=headers)


class Upstream:
    def __init__(self, client: httpx.AsyncClient, base_url: str, token: str) -> None:
        self._client = client
        self._base_url = base_url.rstrip("/")
        self._auth = f"Bearer {token}"

    async def send(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: AsyncIterable[bytes] | None = None,
    ) -> UpstreamReply:
        forwarded = {k: v for k, v in (headers or {}).items() if k.lower() in FORWARDED_REQUEST_HEADERS}
        forwarded["Authorization"] = self._auth
        try:
            response = await self._client.request(
                method, self._base_url + path, headers=forwarded, content=body
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout):
            raise Unavailable(UNREACHABLE, retry_after=RETRY_AFTER_S) from None
        except httpx.TimeoutException:
            raise GatewayTimeout("the model server did not answer in time") from None
        except httpx.TransportError:
            raise BadGateway("the connection to the model server broke; try again") from None
        reply = UpstreamReply(response.status_code, response.headers, response.content)
        _refuse_server_errors(reply)
        return reply

    async def ready(self, timeout_s: float = 2.0) -> bool:
        try:
            response = await self._client.get(self._base_url + "/readyz", timeout=timeout_s)
        except httpx.HTTPError:
            return False
        return response.status_code == 200


def _refuse_server_errors(reply: UpstreamReply) -> None:
    # A 401/403 here means the proxy's own token is wrong: the caller's key was fine, so
    # passing the status through would send them looking in the wrong place.
    if reply.status in (401, 403):
        log_event("upstream_refused_token", level=logging.ERROR, status=reply.status)
        raise BadGateway("the model server refused the proxy's credentials; the operator must fix this")
    if reply.status in (501, 503):
        # Not offered (streamed output), or loading or overloaded: the detail (and Retry-After)
        # are meant for the caller.
        return
    if reply.status >= 500:
        raise BadGateway("the model server failed while handling this request")


async def limited(chunks: AsyncIterable[bytes], limit: int) -> AsyncIterator[bytes]:
    """Passes a request body through, chunk by chunk, until it exceeds `limit` bytes: this is
    what stops a chunked body that declared no length."""
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(body_too_large(limit))
        yield chunk


def body_too_large(limit: int) -> str:
    return f"the request body is larger than the {limit:,}-byte limit ({limit / 2**20:g} MiB)"


def rewrite_urls(prediction: dict[str, Any], origin: str) -> dict[str, Any]:
    """Points a prediction's `urls` at this proxy: the model server's are unreachable outside."""
    prediction_id = prediction.get("id")
    if not isinstance(prediction_id, str):
        return prediction
    prediction["urls"] = {
        "get": f"{origin}/v1/predictions/{prediction_id}",
        "cancel": f"{origin}/v1/predictions/{prediction_id}/cancel",
    }
    return prediction


def hide_upstream(value: Any, upstream_url: str, origin: str) -> Any:
    """Every URL under the model server's address, anywhere in a JSON answer, moved to the
    proxy's: the internal address is nobody's business outside."""
    if isinstance(value, str):
        if value == upstream_url or value.startswith(upstream_url + "/"):
            return origin + value[len(upstream_url) :]
        return value
    if isinstance(value, dict):
        return {key: hide_upstream(item, upstream_url, origin) for key, item in value.items()}
    if isinstance(value, list):
        return [hide_upstream(item, upstream_url, origin) for item in value]
    return value

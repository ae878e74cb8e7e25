"""Every error the proxy raises. Request errors carry their HTTP status here, and `app.py`
turns any of them into `{"detail": ...}` in one handler.

ProxyError
 ├── ConfigError                   start-up only: a bad or missing setting or secret
 ├── CommandError                  an operator command that cannot do what it was asked
 └── RequestError                  answered to the caller as JSON {"detail": "..."}
      ├── BadRequest               400  a header or body the proxy cannot read
      ├── Unauthorized             401  unknown, revoked or malformed API key
      ├── PaymentRequired          402  no subscription pays for this, or a spend cap is reached
      ├── NotFound                 404  unknown route, or a prediction the caller did not create
      ├── MethodNotAllowed         405
      ├── Conflict                 409  an event about a prediction not recorded yet (retried)
      ├── PayloadTooLarge          413  body over MAX_BODY_BYTES (declared or counted)
      ├── UnsupportedMediaType     415  a create that is not application/json
      ├── Unprocessable            422  an Idempotency-Key reused with another request
      ├── TooManyRequests          429  a [[ratelimits]] window is full (Retry-After)
      │    └── DemoQuotaExhausted  429  an anonymous address used its daily demo (Retry-After)
      ├── NotOffered               501  a Replicate feature this API does not offer (trainings, ...)
      ├── BadGateway               502  the model server answered something unusable
      ├── Unavailable              503  model server unreachable or not ready (Retry-After)
      │    └── StorageUnavailable  503  the ledger's database cannot be reached (Retry-After)
      └── GatewayTimeout           504  the model server did not answer in UPSTREAM_TIMEOUT_S

Details are written for the person reading them and never contain a secret, a key or an
internal URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar


class ProxyError(Exception):
    pass


class ConfigError(ProxyError):
    pass


class CommandError(ProxyError):
    pass


class RequestError(ProxyError):
    status_code = 500
    headers: ClassVar[Mapping[str, str]] = {}

    def __init__(self, detail: str, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


class BadRequest(RequestError):
    status_code = 400


class Unauthorized(RequestError):
    status_code = 401
    headers: ClassVar[Mapping[str, str]] = {"WWW-Authenticate": 'Bearer realm="modelfolio"'}


class PaymentRequired(RequestError):
    status_code = 402


class NotFound(RequestError):
    status_code = 404


class MethodNotAllowed(RequestError):
    status_code = 405


class Conflict(RequestError):
    status_code = 409


class PayloadTooLarge(RequestError):
    status_code = 413


class UnsupportedMediaType(RequestError):
    status_code = 415


class Unprocessable(RequestError):
    status_code = 422


class TooManyRequests(RequestError):
    status_code = 429


class DemoQuotaExhausted(TooManyRequests):
    pass


class NotOffered(RequestError):
    status_code = 501


class BadGateway(RequestError):
    status_code = 502


class Unavailable(RequestError):
    status_code = 503


class StorageUnavailable(Unavailable):
    """Raised by proxy/storage for any database it cannot reach or write; nothing was written
    (the transaction is rolled back). The caller is told to come back; `reason`, which names the
    database, is for the operator's log and commands only."""

    def __init__(self, reason: str, *, retry_after: int | None = 5) -> None:
        super().__init__(
            "the proxy's ledger cannot be reached right now; nothing was lost, try again shortly",
            retry_after=retry_after,
        )
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class GatewayTimeout(RequestError):
    status_code = 504

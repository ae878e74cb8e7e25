"""Every error the inference server raises, each mapped to one HTTP status here.

InferenceError
 ├── ConfigError           422  a setting or model folder that cannot be used: stops start-up
 │                              with its message; answered to a reload that found it
 ├── BadRequest            400  malformed JSON, wrong shape
 ├── Unauthorized          401  missing or wrong inference token
 ├── NotFound              404  unknown model, version or prediction
 ├── PayloadTooLarge       413  body or image over its limit
 ├── UnsupportedMediaType  415  not JSON, not an image type we decode
 ├── InvalidInput          422  input that breaks the model's schema
 ├── QueueFull             429  the model's queue is at its bound (Retry-After)
 ├── NotOffered            501  a Replicate feature this server does not offer (trainings, ...)
 └── Unavailable           503  models still loading (Retry-After)

A predictor's own exceptions are not in this tree: they fail the one prediction that raised them.
"""

from __future__ import annotations


class InferenceError(Exception):
    status_code = 500

    def __init__(self, detail: str, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


class ConfigError(InferenceError):
    status_code = 422


class BadRequest(InferenceError):
    status_code = 400


class Unauthorized(InferenceError):
    status_code = 401


class NotFound(InferenceError):
    status_code = 404


class PayloadTooLarge(InferenceError):
    status_code = 413


class UnsupportedMediaType(InferenceError):
    status_code = 415


class InvalidInput(InferenceError):
    status_code = 422


class QueueFull(InferenceError):
    status_code = 429


class NotOffered(InferenceError):
    status_code = 501


class Unavailable(InferenceError):
    status_code = 503

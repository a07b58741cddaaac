"""One error model for the whole fleet.

Every failure a client can see is one of these exceptions, mapped to HTTP in one place
(:func:`install_error_handlers`) and rendered as the OpenAI error body
``{"error": {"message", "type", "code", "param"}}``::

    FleetError                      500 server_error
    ├── InvalidRequest              400 invalid_request_error
    │   ├── UnsupportedParameter    400 invalid_request_error  (code unsupported_parameter)
    │   └── ContextLengthExceeded   400 invalid_request_error  (code context_length_exceeded)
    ├── AuthenticationFailed        401 authentication_error
    ├── NotFound                    404 not_found_error
    ├── PayloadTooLarge             413 invalid_request_error
    ├── UnsupportedMediaType        415 invalid_request_error
    ├── RateLimited                 429 rate_limit_error       (Retry-After)
    │   └── Overloaded              429 rate_limit_error       (queue full / in-flight cap)
    ├── BadGateway                  502 server_error           (code bad_gateway)
    ├── ServiceUnavailable          503 service_unavailable    (Retry-After)
    │   └── ModelNotReady           503 service_unavailable
    └── DeadlineExceeded            504 timeout_error
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger("modelfleet.errors")


class FleetError(Exception):
    """Base of every client-visible error."""

    status_code = 500
    error_type = "server_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.code, self.param)

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, round(self.retry_after)))}


class InvalidRequest(FleetError):
    status_code = 400
    error_type = "invalid_request_error"


class UnsupportedParameter(InvalidRequest):
    default_code = "unsupported_parameter"


class ContextLengthExceeded(InvalidRequest):
    default_code = "context_length_exceeded"


class AuthenticationFailed(FleetError):
    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class NotFound(FleetError):
    status_code = 404
    error_type = "not_found_error"


class PayloadTooLarge(FleetError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "payload_too_large"


class UnsupportedMediaType(FleetError):
    status_code = 415
    error_type = "invalid_request_error"
    default_code = "unsupported_media_type"


class RateLimited(FleetError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class Overloaded(RateLimited):
    default_code = "overloaded"


class BadGateway(FleetError):
    """A backend's answer the gateway will not relay (e.g. a body over its cap)."""

    status_code = 502
    default_code = "bad_gateway"


class ServiceUnavailable(FleetError):
    status_code = 503
    error_type = "service_unavailable"
    default_code = "service_unavailable"


class ModelNotReady(ServiceUnavailable):
    default_code = "model_not_ready"


class DeadlineExceeded(FleetError):
    status_code = 504
    error_type = "timeout_error"
    default_code = "deadline_exceeded"


def error_body(
    message: str, error_type: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """The OpenAI-shaped error body."""
    return {"error": {"message": message, "type": error_type, "code": code, "param": param}}


def error_response(exc: FleetError) -> Response:
    return Response(
        orjson.dumps(exc.body()),
        status_code=exc.status_code,
        media_type="application/json",
        headers=exc.headers(),
    )


_HTTP_TYPES = {
    400: InvalidRequest,
    401: AuthenticationFailed,
    404: NotFound,
    405: InvalidRequest,
    413: PayloadTooLarge,
    429: RateLimited,
    503: ServiceUnavailable,
}


def _is_union_tag(part: Any) -> bool:
    """A loc entry naming a union branch by pydantic's internal type (``list[constrained-str]``,
    ``function-after[...]``): meaningless to a client, so never shown."""
    if not isinstance(part, str):
        return False
    return "[" in part or part in _TYPE_TAGS or part.startswith(("constrained-", "function-"))


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none", "tagged-union"})
_PREFIXES = ("Value error, ", "Assertion failed, ")


def _loc_to_param(loc: Sequence[Any]) -> str | None:
    # FastAPI's errors start with where the value was ("body"); a field may be named "query".
    if len(loc) > 1 and loc[0] in ("body", "query", "path", "header"):
        loc = loc[1:]
    parts = [str(p) for p in loc if not _is_union_tag(p)]
    return ".".join(parts) or None


# A body of 800k bad items makes 800k pydantic errors: the answer names the first few only, so
# a 400 stays a few hundred bytes whatever the request (the security review saw 68 MB).
MAX_REPORTED_ERRORS = 3
MAX_ERROR_MESSAGE_CHARS = 600
_MAX_ONE_ERROR_CHARS = 180
# Errors looked at: enough for the branches of a union on the first few fields.
_MAX_SCANNED_ERRORS = 64


def _message(err: Any) -> str:
    if err.get("type") == "json_invalid":
        if "recursion limit" in str((err.get("ctx") or {}).get("error", "")):
            return "request body is nested too deeply"
        return "request body is not valid JSON"
    if err.get("type") == "extra_forbidden":
        return "unsupported parameter"
    msg = str(err.get("msg", "invalid value"))
    for prefix in _PREFIXES:
        msg = msg.removeprefix(prefix)
    return msg


def validation_message(errors: Sequence[Any]) -> tuple[str, str | None]:
    """Turn pydantic validation errors into one short, readable message and the first bad param.

    The branches of a union each report their own failure; shown as they are, they name
    pydantic's internal types. Each failure is reported at its field, the failures of one
    field joined, and a branch that got further (``input.1``) wins over one that failed at
    the field itself (``input``). At most ``MAX_REPORTED_ERRORS`` fields are named and the
    message is capped, so a 400 stays small whatever the body.
    """
    by_param: dict[str | None, list[str]] = {}
    for err in errors[:_MAX_SCANNED_ERRORS]:
        param = _loc_to_param(err.get("loc", ()))
        msgs = by_param.setdefault(param, [])
        msg = _message(err)
        if msg not in msgs:
            msgs.append(msg)
    params = [
        p
        for p in by_param
        if p is None or not any(q and q != p and q.startswith(p + ".") for q in by_param)
    ]
    parts = []
    for p in params[:MAX_REPORTED_ERRORS]:
        msgs = by_param[p]
        if len(msgs) > 1 and all(m.startswith("Input should be ") for m in msgs):
            msgs = [msgs[0], *(m.removeprefix("Input should be ") for m in msgs[1:])]
        msg = " or ".join(msgs)
        parts.append((f"{p}: {msg}" if p else msg)[:_MAX_ONE_ERROR_CHARS])
    if len(errors) > _MAX_SCANNED_ERRORS or len(params) > MAX_REPORTED_ERRORS:
        parts.append("and more errors")
    message = "; ".join(parts) or "invalid request"
    return message[:MAX_ERROR_MESSAGE_CHARS], params[0] if params else None


def validation_error(errors: Sequence[Any]) -> InvalidRequest:
    """The 400 for ``errors``: unknown fields only is ``unsupported parameter(s)``, the same
    message chat gives, so that one rule reads the same on every route."""
    scanned = errors[:_MAX_SCANNED_ERRORS]
    if scanned and all(e.get("type") == "extra_forbidden" for e in scanned):
        names = [_loc_to_param(e.get("loc", ())) or "?" for e in scanned[:MAX_REPORTED_ERRORS]]
        message = f"unsupported parameter(s): {', '.join(names)}"
        return UnsupportedParameter(message[:MAX_ERROR_MESSAGE_CHARS], param=names[0])
    message, param = validation_message(errors)
    return InvalidRequest(message, param=param)


def exception_response(exc: Exception) -> Response:
    """The response for ``exc``: the one mapping, used by the FastAPI handlers and the raw-ASGI
    paths alike. Validation failures are 400s; anything not a FleetError is a logged 500."""
    if isinstance(exc, FleetError):
        if exc.status_code >= 500:
            log.warning("request failed: %s", exc.message, extra={"status": exc.status_code})
        return error_response(exc)
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False, include_input=False)
        return error_response(validation_error(errors))
    if isinstance(exc, RequestValidationError):
        return error_response(validation_error(exc.errors()))
    log.exception("unhandled error", exc_info=exc)
    return error_response(FleetError("internal server error"))


async def _exception_handler(request: Request, exc: Exception) -> Response:
    return exception_response(exc)


async def _http_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    cls = _HTTP_TYPES.get(exc.status_code, FleetError)
    err = cls(str(exc.detail))
    err.status_code = exc.status_code
    return error_response(err)


def install_error_handlers(app: FastAPI) -> None:
    """Register the one mapping from exceptions to HTTP responses."""
    app.add_exception_handler(FleetError, _exception_handler)
    app.add_exception_handler(RequestValidationError, _exception_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(Exception, _exception_handler)

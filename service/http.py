"""The HTTP edge's shared pieces: body parsing, client identity, the error handler.

Only here do domain errors become `{"error": {"code", "message", "field"}}`.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import math
import re
from typing import TypeVar

import redis
from flask import Flask, Response, jsonify, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .errors import ApiError, BadJson, InvalidField, PayloadTooLarge, RateLimited
from .state import current_state
from .store.rate_limit import RateSlot

Model = TypeVar("Model", bound=BaseModel)

# A \uD800-\uDFFF escape: only then can parsed JSON hold a lone surrogate (raw UTF-8 cannot).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abAB]")
# Wrong tokens a client may send per minute (admin bearer, sign-in form, metrics token).
AUTH_FAILURES_PER_MINUTE = 10
# IPv6 clients are limited per /64: one host usually owns a whole /64 and can pick any address in it.
_IPV6_CLIENT_PREFIX = 64


def error_response(status: int, code: str, message: str, field: str | None = None) -> Response:
    response = jsonify({"error": {"code": code, "message": message, "field": field}})
    response.status_code = status
    return response


def _field_path(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or None  # type: ignore[return-value]


def raw_body() -> bytes:
    """The request body, or a 413 `ApiError` beyond the request's size limit."""
    try:
        return request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise PayloadTooLarge(f"request body is over {request.max_content_length} bytes") from None


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400: valid JSON, but no timestamp or counter can hold it
        raise ValueError(f"{text} is out of range")
    return value


def read_json() -> object:
    """The request body as strict JSON, or a 400/413 `ApiError` (never a 500).

    Beyond `json.loads`, also a 400: a body that is not UTF-8 (RFC 8259); NaN,
    Infinity and numbers too large for a float (not JSON, or no timestamp or
    counter can hold them); nesting deep enough to exhaust the stack; integers over
    Python's 4,300-digit limit; a lone UTF-16 surrogate escape (`"\\ud800"`), which
    no Redis write or UTF-8 payload can hold. Duplicate keys keep the last value.
    """
    raw = raw_body()
    try:
        # Decoded here, strictly: json.loads(bytes) would guess UTF-16/32 and let surrogates pass.
        data = json.loads(raw.decode(), parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BadJson("request body must be JSON") from None
    if _SURROGATE_ESCAPE.search(raw):
        try:
            json.dumps(data, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise BadJson("request body must not contain lone UTF-16 surrogates") from None
    return data


def parse_model(model: type[Model], data: object, prefix: str | None = None, **context: object) -> Model:
    """Validate `data` against `model`; a refusal (422) names the first bad field."""
    if not isinstance(data, dict):
        raise InvalidField(f"{prefix or 'request body'} must be a JSON object", field=prefix)
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = _field_path(((prefix,) if prefix else ()) + tuple(first["loc"]))
        message = first["msg"].removeprefix("Value error, ")
        raise InvalidField(f"{field}: {message}" if field else message, field=field) from None


def parse_body(model: type[Model], **context: object) -> Model:
    """Validate the JSON request body against `model`."""
    return parse_model(model, read_json(), **context)


def bearer_token() -> str | None:
    """The token of an `Authorization: Bearer …` header, if the request has one."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison, so response timing does not reveal a secret's prefix."""
    return hmac.compare_digest(given.encode(), expected.encode())


def token_matches(given: str | None, expected: str) -> bool:
    """Whether `given` is the secret `expected` (admin or metrics token, sign-in form).

    Failed checks are limited per client like sign-ins: after
    `AUTH_FAILURES_PER_MINUTE` wrong or missing tokens in a minute, every check
    answers 429 with Retry-After until the minute is over, a right guess too, so
    the limit cannot be used as an oracle.

    Raises:
        RateLimited: the client used up its failures for this minute.
    """
    limiter = current_state().store.rate_limiter
    slot = RateSlot.current("auth", client_id(), AUTH_FAILURES_PER_MINUTE, message="too many failed sign-ins")
    limiter.check(slot)
    if given is not None and same_secret(given, expected):
        return True
    limiter.hit(slot)
    return False


def client_id() -> str:
    """Who a request counts against for rate limiting: the IPv4 address, or the IPv6 /64
    (ProxyFix decides remote_addr behind trusted proxies)."""
    return client_group(request.remote_addr or "unknown")


def client_group(address: str) -> str:
    """`address` itself for IPv4 (also IPv4-mapped IPv6), its /64 network for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, _IPV6_CLIENT_PREFIX), strict=False))
    return str(ip)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        response = error_response(exc.status, exc.code, exc.message, exc.field)
        if isinstance(exc, RateLimited):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.errorhandler(redis.ConnectionError)
    @app.errorhandler(redis.TimeoutError)
    def _redis_unavailable(exc: redis.RedisError) -> Response:
        # Redis restarting or unreachable after the connection's retries. Every write
        # here is idempotent (upsert by endpoint, webhook-id, one count per receipt),
        # so the client may simply send the same request again.
        app.logger.warning("redis unavailable: %s", type(exc).__name__)
        response = error_response(503, "unavailable", "storage is unavailable; try again shortly")
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        response = error_response(exc.code or 500, code, exc.description or exc.name)
        for name, value in exc.get_headers():
            if name.lower() == "allow":
                response.headers[name] = value
        return response

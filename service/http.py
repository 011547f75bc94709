"""The HTTP edge's shared pieces: body parsing, client identity, the error handler.

Only here do domain errors become `{"error": {"code", "message", "field"}}`.
"""

from __future__ import annotations

import hmac
import json
from typing import TypeVar

import redis
from flask import Flask, Response, jsonify, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .errors import ApiError, BadJson, InvalidField, PayloadTooLarge, RateLimited

Model = TypeVar("Model", bound=BaseModel)


def error_response(status: int, code: str, message: str, field: str | None = None) -> Response:
    response = jsonify({"error": {"code": code, "message": message, "field": field}})
    response.status_code = status
    return response


def _field_path(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or None  # type: ignore[return-value]


def read_json() -> object:
    """The request body as JSON, or a 400/413 `ApiError`."""
    try:
        raw = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise PayloadTooLarge("request body is too large") from None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadJson("request body must be JSON") from None


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


def client_id() -> str:
    """Who a write counts against for rate limiting (ProxyFix decides remote_addr)."""
    return request.remote_addr or "unknown"


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

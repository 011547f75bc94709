"""Exception types for the service, each saying whose fault it is.

Only the HTTP edge (`service.http`) turns `ApiError`s into the error shape
`{"error": {"code", "message", "field"}}`; nothing here imports Flask.
"""

from __future__ import annotations


class SettingsError(Exception):
    """The operator's configuration is unusable; names the variable."""

    def __init__(self, variable: str, problem: str):
        super().__init__(f"{variable} {problem}")
        self.variable = variable
        self.problem = problem


class ApiError(Exception):
    """The caller sent something we refuse; carries the status and offending field."""

    status, code = 400, "invalid"

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class BadJson(ApiError):
    status, code = 400, "bad_json"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class PayloadTooLarge(ApiError):
    status, code = 413, "too_large"


class InvalidField(ApiError):
    status, code = 422, "invalid_field"


class RateLimited(ApiError):
    status, code = 429, "rate_limited"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class Conflict(ApiError):
    status, code = 409, "conflict"


class FeedProblem(Exception):
    """A publisher's feed could not be fetched or read: the feed's fault (or its server's),
    recorded on the feed and retried with back-off, never fatal to other feeds.

    `reason` is a short code for metrics and the dashboard (`timeout`, `http_404`, `too_large`,
    `malformed`, `blocked`, ...); `retry_after` is the server's own Retry-After in seconds, if any.
    """

    def __init__(self, reason: str, message: str, retry_after: float | None = None):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.retry_after = retry_after

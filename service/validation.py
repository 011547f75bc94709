"""Request bodies of the browser API: the schemas that validate them also feed OpenAPI.

A subscription is accepted only if it is a real subscription to a real push
service: https on 443 to an allowed host (parsed, never pattern-matched on the
whole URL), no IP literals or credentials, keys that are a P-256 point and a
16-byte secret. pywebpush would encrypt to a 1-byte auth secret; we refuse it.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal
from urllib.parse import SplitResult, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from .subscriptions import Subscription
from .vapid import b64url_decode

MAX_ENDPOINT_LENGTH = 1024
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")
MAX_TOPICS = 32


def split_url(url: str, max_length: int) -> SplitResult:
    """`url` parsed (its port too), for the checks push endpoints and feed URLs share.

    Raises:
        ValueError: saying why it is no usable URL (too long, spaces or control characters, unparseable).
    """
    if len(url) > max_length:
        raise ValueError(f"is longer than {max_length} characters")
    if _SPACE_OR_CONTROL.search(url):
        raise ValueError("contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        raise ValueError("is not a valid URL") from None
    return parts


class PushHostPolicy:
    """Which push-service hosts an endpoint may point at."""

    def __init__(self, builtin: tuple[str, ...], extra: tuple[str, ...] = ()):
        self.builtin = tuple(h.lower() for h in builtin)
        # Extra entries are exact host[:port] (tests add 127.0.0.1:PORT).
        self.extra = frozenset(h.lower() for h in extra)

    def check(self, endpoint: str) -> str | None:
        """Return why `endpoint` is refused, or None if it is allowed."""
        try:
            parts = split_url(endpoint, MAX_ENDPOINT_LENGTH)
        except ValueError as problem:
            return str(problem)
        port = parts.port
        host = (parts.hostname or "").lower()
        if parts.scheme != "https":
            return "must be an https:// URL"
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            return "must not contain credentials"
        if not host:
            return "has no host"
        if parts.fragment:
            return "must not have a fragment"
        authority = f"{host}:{port}" if port is not None else host
        if authority in self.extra or (port is None and f"{host}:443" in self.extra):
            return None
        if port not in (None, 443):
            return "must use port 443"
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            pass
        else:
            return "must not be an IP address"
        if not any(host == allowed or host.endswith("." + allowed) for allowed in self.builtin):
            return f"host {host} is not a known push service"
        return None


def _decode_point(value: str) -> bytes:
    try:
        raw = b64url_decode(value)
    except ValueError:
        raise ValueError("must be base64url") from None
    if len(raw) != 65 or raw[0] != 4:
        raise ValueError("must be a 65-byte uncompressed P-256 point")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError:
        raise ValueError("is not a point on P-256") from None
    return raw


def _decode_auth(value: str) -> bytes:
    try:
        raw = b64url_decode(value)
    except ValueError:
        raise ValueError("must be base64url") from None
    if len(raw) != 16:
        raise ValueError("must be exactly 16 bytes")
    return raw


class PushKeys(BaseModel):
    model_config = ConfigDict(extra="ignore")
    p256dh: Annotated[str, Field(max_length=128, description="base64url, 65-byte uncompressed P-256 point")]
    auth: Annotated[str, Field(max_length=32, description="base64url, 16 bytes")]

    @field_validator("p256dh")
    @classmethod
    def _p256dh(cls, value: str) -> str:
        _decode_point(value)
        return value

    @field_validator("auth")
    @classmethod
    def _auth(cls, value: str) -> str:
        _decode_auth(value)
        return value


class PushSubscriptionJson(BaseModel):
    """`PushSubscription.toJSON()` as a browser sends it."""

    model_config = ConfigDict(extra="ignore")
    endpoint: Annotated[str, Field(max_length=MAX_ENDPOINT_LENGTH)]
    expirationTime: float | None = None
    keys: PushKeys

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str, info: ValidationInfo) -> str:
        policy: PushHostPolicy | None = (info.context or {}).get("push_hosts")
        if policy is None:
            raise ValueError("no push host policy configured")
        problem = policy.check(value)
        if problem:
            raise ValueError(problem)
        return value


def _check_topics(value: list[str], info: ValidationInfo) -> list[str]:
    known: frozenset[str] = (info.context or {}).get("topics", frozenset())
    unknown = [t for t in value if t not in known]
    if unknown:
        raise ValueError(f"unknown topic {unknown[0]!r}")
    return list(dict.fromkeys(value))


def _check_timezone(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("is not an IANA time zone") from None
    return value


class SubscribeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    subscription: PushSubscriptionJson
    topics: Annotated[list[Annotated[str, Field(max_length=32)]], Field(min_length=1, max_length=MAX_TOPICS)]
    locale: Annotated[str | None, Field(max_length=35, pattern=r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")] = None
    timezone: Annotated[str | None, Field(max_length=64)] = None

    _topics = field_validator("topics")(_check_topics)
    _timezone = field_validator("timezone")(_check_timezone)

    def to_subscription(self) -> Subscription:
        keys = self.subscription.keys
        return Subscription(
            endpoint=self.subscription.endpoint,
            p256dh=b64url_decode(keys.p256dh),  # checked on the curve by the validator already
            auth=b64url_decode(keys.auth),
            topics=tuple(self.topics),
            locale=self.locale,
            timezone=self.timezone,
        )


class UnsubscribeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    endpoint: Annotated[str, Field(min_length=1, max_length=MAX_ENDPOINT_LENGTH)]


class ChangeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    oldEndpoint: Annotated[str, Field(min_length=1, max_length=MAX_ENDPOINT_LENGTH)]
    subscription: PushSubscriptionJson

    def to_subscription(self) -> Subscription:
        keys = self.subscription.keys
        return Subscription(self.subscription.endpoint, b64url_decode(keys.p256dh), b64url_decode(keys.auth))


class PromptEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["shown", "accepted", "declined", "denied"]


class ReceiptEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["delivered", "clicked", "dismissed"]
    receipt: Annotated[str, Field(min_length=1, max_length=128)]

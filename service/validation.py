"""Request bodies of the browser API and the CMS webhook: the pydantic models that
validate them at the edge, and that also feed the OpenAPI document.

A subscription is accepted only if it is a real subscription to a real push
service: its endpoint passes `service.endpoints.parse_endpoint` (the parser the
sender uses too), its keys are a P-256 point and a 16-byte secret. pywebpush
would encrypt to a 1-byte auth secret; we refuse it.

A story's title and body are cut (with an ellipsis) to what a push can carry,
never refused for their length: a CMS that sends a whole article still gets its
story out (CONTRACT.md: "longer texts are cut, never refused").
"""

from __future__ import annotations

import math
import re
import time
from datetime import datetime
from functools import cache
from typing import Annotated, Any, Literal
from urllib.parse import SplitResult, urlsplit
from zoneinfo import available_timezones

from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from .endpoints import MAX_ENDPOINT_LENGTH, InvalidEndpoint, parse_endpoint
from .push_text import cut_to_bytes
from .subscriptions import Subscription
from .vapid import b64url_decode
from .vocabulary import DEFAULT_TTL, DEFAULT_URGENCY, PromptEventType, ReceiptType, Urgency

MAX_TOPICS = 32
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")
# Query bounds of the operator API: campaigns listed, minutes of send rate charted.
MAX_CAMPAIGNS = 500
MAX_RATE_MINUTES = 120
# How far ahead a story may be scheduled; beyond that `send_at` is a typo (ms for s?).
MAX_SCHEDULE_AHEAD = 366 * 86400
# Four URLs of this size, the id and the JSON framing still leave room in the
# 2,600-byte push payload for a title and body.
MAX_URL = 512


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
        try:
            parse_endpoint(value, (info.context or {}).get("push_hosts", ()))
        except InvalidEndpoint as exc:
            raise ValueError(str(exc)) from None
        return value


def _check_topics(value: list[str], info: ValidationInfo) -> list[str]:
    known: frozenset[str] = (info.context or {}).get("topics", frozenset())
    unknown = [t for t in value if t not in known]
    if unknown:
        raise ValueError(f"unknown topic {unknown[0]!r}")
    return list(dict.fromkeys(value))


@cache
def _time_zones() -> frozenset[str]:
    """The IANA zone names this machine knows: a set lookup, so no name ever reaches the
    file system (`ZoneInfo("America")` raises IsADirectoryError, not ValueError)."""
    return frozenset(available_timezones())


def _check_timezone(value: str | None) -> str | None:
    if value is None:
        return None
    if value not in _time_zones():
        raise ValueError("is not an IANA time zone")
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
    type: PromptEventType


class ReceiptEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: ReceiptType
    receipt: Annotated[str, Field(min_length=1, max_length=128)]


# -- the CMS webhook ------------------------------------------------------------------

HttpUrl = Annotated[str, Field(max_length=MAX_URL, pattern=r"^https?://[^\s]+$")]


class StoryData(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:/-]+$")]
    title: Annotated[str, Field(min_length=1)]
    body: str = ""
    url: HttpUrl
    image: HttpUrl | None = None
    icon: HttpUrl | None = None
    badge: HttpUrl | None = None
    topics: Annotated[list[str], Field(min_length=1, max_length=MAX_TOPICS)]
    send_at: datetime | float | None = None
    ttl: Annotated[int, Field(ge=60, le=28 * 86400)] = DEFAULT_TTL
    urgency: Urgency = DEFAULT_URGENCY

    _topics = field_validator("topics")(_check_topics)

    @field_validator("title", "body")
    @classmethod
    def _cut(cls, value: str) -> str:
        return cut_to_bytes(value)

    @field_validator("send_at")
    @classmethod
    def _send_at(cls, value: datetime | float | None) -> datetime | float | None:
        if isinstance(value, datetime) and value.tzinfo is None:
            raise ValueError("must include a time zone (e.g. 2026-11-28T09:00:00Z)")
        when = value.timestamp() if isinstance(value, datetime) else value
        if when is not None and not (math.isfinite(when) and when <= time.time() + MAX_SCHEDULE_AHEAD):
            raise ValueError("must be Unix seconds or ISO 8601 at most a year ahead")
        return value

    def send_at_timestamp(self) -> float | None:
        if self.send_at is None:
            return None
        return self.send_at.timestamp() if isinstance(self.send_at, datetime) else float(self.send_at)

    def as_story(self) -> dict[str, Any]:
        """The fields a campaign keeps (send_at lives on the campaign itself)."""
        return self.model_dump(exclude={"send_at"}, exclude_none=True)


class StoryRef(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: Annotated[str, Field(min_length=1, max_length=128)]


class StoryEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["story.published", "story.updated", "story.unpublished"]
    data: dict[str, Any]

"""The CMS webhook's payload: what a story is, validated at the edge."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from .validation import _check_topics
from .vocabulary import DEFAULT_TTL, DEFAULT_URGENCY, Urgency

# Four URLs of this size, the id and the JSON framing still leave room in the
# 2,600-byte push payload for a title and body.
MAX_URL = 512
HttpUrl = Annotated[str, Field(max_length=MAX_URL, pattern=r"^https?://[^\s]+$")]


class StoryData(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:/-]+$")]
    title: Annotated[str, Field(min_length=1, max_length=2000)]
    body: Annotated[str, Field(max_length=10000)] = ""
    url: HttpUrl
    image: HttpUrl | None = None
    icon: HttpUrl | None = None
    badge: HttpUrl | None = None
    topics: Annotated[list[str], Field(min_length=1, max_length=32)]
    send_at: datetime | float | None = None
    ttl: Annotated[int, Field(ge=60, le=28 * 86400)] = DEFAULT_TTL
    urgency: Urgency = DEFAULT_URGENCY

    _topics = field_validator("topics")(_check_topics)

    @field_validator("send_at")
    @classmethod
    def _send_at(cls, value: datetime | float | None, info: ValidationInfo) -> datetime | float | None:
        if isinstance(value, datetime) and value.tzinfo is None:
            raise ValueError("must include a time zone (e.g. 2026-11-28T09:00:00Z)")
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

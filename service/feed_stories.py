"""A feed entry becomes a story: its id, topics, text and image, checked like a webhook's."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from .feed_parsing import FeedEntry
from .topics import Topic
from .validation import MAX_URL, StoryData

STORY_ID = re.compile(r"^[A-Za-z0-9._:/-]{1,128}$")
_NOT_ID_CHAR = re.compile(r"[^A-Za-z0-9.:/-]")
_URL = re.compile(r"^https?://\S+$")
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
# A notification shows two or three lines; the push message cuts further if it must.
BODY_CHARS = 300
TITLE_CHARS = 300


class EntrySkipped(Exception):
    """The entry cannot become a story (no usable link, no topic, ...); says why."""


def story_id_for(key: str) -> str:
    """The entry's guid / id (else its link) as a story id the webhook would accept.

    Used as is when it already is one (A–Z a–z 0–9 . _ : / -, at most 128 characters), so a
    CMS that sends that same id by webhook gets the same campaign. Otherwise every other
    character (and `_`) becomes `_XX`, the hex of its UTF-8 bytes, and an id still over 128
    characters keeps its first 111 and ends with `.` and 16 hex digits of the original's
    SHA-256: stable across polls, readable, distinct in practice.
    """
    if STORY_ID.match(key):
        return key
    escaped = _NOT_ID_CHAR.sub(lambda m: "".join(f"_{b:02X}" for b in m.group().encode()), key)
    if len(escaped) <= 128:
        return escaped
    return f"{escaped[:111]}.{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def title_digest(title: str) -> str:
    """What the feed remembers of a title: enough to notice a change, small in Redis."""
    return hashlib.sha256(title.encode()).hexdigest()[:16]


def _slug(name: str) -> str:
    return _NOT_SLUG.sub("-", name.casefold()).strip("-")


def _cut(text: str, limit: int) -> str:
    """At most `limit` characters, cut at a word boundary with an ellipsis."""
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    space = head.rfind(" ")
    return (head[:space] if space > limit // 2 else head).rstrip(" ,.;:") + "…"


class TopicMatcher:
    """An entry's categories to our topics: the feed's category map first, then by name
    (a category equal to a topic's id or name, ignoring case and punctuation, e.g. "TV & Film"
    or "tv-and-film" for "TV and Film"); the feed's own topics when none match."""

    def __init__(self, catalogue: Iterable[Topic], category_map: Mapping[str, str], default: Iterable[str]):
        self.by_name: dict[str, str] = {}
        for topic in catalogue:
            self.by_name[_slug(topic.id_)] = topic.id_
            self.by_name[_slug(topic.name)] = topic.id_
        self.mapped = {name.strip().casefold(): topic for name, topic in category_map.items()}
        self.default = list(default)

    def _match(self, category: str) -> str | None:
        return self.mapped.get(category.strip().casefold()) or self.by_name.get(_slug(category.replace("&", "and")))

    def topics_for(self, categories: Iterable[str]) -> list[str]:
        matched = (self._match(c) for c in categories)
        return list(dict.fromkeys(t for t in matched if t)) or list(self.default)


def _url(value: str | None) -> str | None:
    return value if value and len(value) <= MAX_URL and _URL.match(value) else None


def entry_story(entry: FeedEntry, matcher: TopicMatcher, known_topics: frozenset[str]) -> dict[str, Any]:
    """The story a `story.published` webhook would carry for this entry, validated by the
    webhook's own model.

    Raises:
        EntrySkipped: no usable link, no topic, or a field the webhook would refuse.
    """
    link = _url(entry.link)
    if link is None:
        raise EntrySkipped("no http(s) link of at most 512 characters")
    topics = matcher.topics_for(entry.categories)
    if not topics:
        raise EntrySkipped("no category maps to a topic and the feed has no topics of its own")
    title = entry.title or entry.summary
    if not title:
        raise EntrySkipped("no title")
    data = {
        "id": story_id_for(entry.key),
        "title": _cut(title, TITLE_CHARS),
        "body": _cut(entry.summary, BODY_CHARS) if entry.title else "",
        "url": link,
        "image": _url(entry.image) or _url(entry.content_image),
        "topics": topics,
    }
    present = {name: value for name, value in data.items() if value is not None}
    try:
        story = StoryData.model_validate(present, context={"topics": known_topics})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise EntrySkipped(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    return story.as_story()

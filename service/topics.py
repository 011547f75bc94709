"""The topic catalogue: the one place topics are configured.

Seeded with the publisher's own sections; `STORYPUSH_TOPICS` ("id:Name,id:Name")
replaces the list for another publisher.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import SettingsError

DEFAULT_TOPICS: tuple[tuple[str, str], ...] = (
    ("news", "News"),
    ("entertainment", "Entertainment"),
    ("tv-and-film", "TV and Film"),
    ("animals", "Animals"),
    ("sport", "Sport"),
    ("lifestyle", "Lifestyle"),
)

TOPIC_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


@dataclass(frozen=True)
class Topic:
    id_: str
    name: str

    def as_json(self) -> dict[str, str]:
        return {"id": self.id_, "name": self.name}


def parse_topics(raw: str | None) -> tuple[Topic, ...]:
    """Parse `STORYPUSH_TOPICS`, or return the default catalogue when unset."""
    if not raw:
        return tuple(Topic(id_, name) for id_, name in DEFAULT_TOPICS)
    topics: list[Topic] = []
    for item in raw.split(","):
        id_, _, name = item.strip().partition(":")
        if not TOPIC_ID.match(id_):
            raise SettingsError("STORYPUSH_TOPICS", f"topic id {id_!r} must be lowercase a-z, 0-9 and '-'")
        topics.append(Topic(id_, name.strip() or id_))
    if len({t.id_ for t in topics}) != len(topics):
        raise SettingsError("STORYPUSH_TOPICS", "lists a topic twice")
    return tuple(topics)

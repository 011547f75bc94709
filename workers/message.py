"""The push message a service worker receives, and its headers.

UTF-8 JSON of at most 2,600 bytes (so it fits Firefox for Android's relay
through FCM); longer texts are cut, body first, then title, on a character
boundary with an ellipsis, never refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.push_text import MAX_PAYLOAD_BYTES, cut
from service.vocabulary import DEFAULT_TTL, DEFAULT_URGENCY

# Room kept for the per-subscriber receipt (campaign id, hex id, MAC).
RECEIPT_ROOM = 64


def topic_header(story_id: str) -> str:
    """Exactly 32 base64url characters, no padding (24 bytes of a hash): every
    version of a story gets the same Topic, so a newer one replaces an
    undelivered older one; Apple refuses longer or `len % 4 == 1` topics."""
    return base64.urlsafe_b64encode(hashlib.sha256(story_id.encode()).digest()[:24]).decode()


def _dump(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True)
class MessageTemplate:
    """The campaign's message with a hole for the receipt: built once per batch,
    filled per subscriber by byte concatenation instead of a JSON dump each."""

    head: bytes
    tail: bytes

    def render(self, receipt: str) -> bytes:
        return self.head + receipt.encode() + self.tail


def build_template(campaign_id: str, story: Mapping[str, Any]) -> MessageTemplate:
    marker = f"receipt-{secrets.token_hex(16)}"  # cannot collide with story text
    message: dict[str, Any] = {
        "v": 1,
        "campaign": campaign_id,
        "title": story["title"],
        "body": story.get("body") or "",
    }
    message["url"] = story["url"]
    for optional in ("icon", "image", "badge"):
        if story.get(optional):
            message[optional] = story[optional]
    message["tag"] = story["id"]
    message["receipt"] = marker
    budget = MAX_PAYLOAD_BYTES - RECEIPT_ROOM

    def fits_with(**changes: str) -> bool:
        return len(_dump({**message, **changes})) <= budget

    if not fits_with():
        message["body"] = cut(message["body"], lambda body: fits_with(body=body))
    if not fits_with():
        message["title"] = cut(message["title"], lambda title: fits_with(title=title))
    if not fits_with():
        raise ValueError("story fields other than title and body exceed the push payload limit")
    head, _, tail = _dump(message).partition(marker.encode())
    return MessageTemplate(head, tail)


@dataclass(frozen=True)
class PushHeaders:
    ttl: int
    urgency: str
    topic: str

    @classmethod
    def for_story(cls, story: Mapping[str, Any]) -> PushHeaders:
        ttl = story.get("ttl")
        return cls(
            ttl=DEFAULT_TTL if ttl is None else int(ttl),
            urgency=story.get("urgency") or DEFAULT_URGENCY.value,
            topic=topic_header(story["id"]),
        )

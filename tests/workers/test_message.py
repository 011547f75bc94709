"""Push payload shape, size limit and headers; how a push service's answer is classified."""

from __future__ import annotations

import base64
import json

import pytest

from benchmarks.common import WALRUS_STORY
from workers.message import MAX_PAYLOAD_BYTES, RECEIPT_ROOM, PushHeaders, build_template, topic_header

STORY = {k: v for k, v in WALRUS_STORY.items() if k != "send_at"}


def test_message_has_the_contract_shape():
    message = json.loads(build_template("c123", STORY).render("c123.1f.abc"))
    assert message == {
        "v": 1,
        "campaign": "c123",
        "title": STORY["title"],
        "body": STORY["body"],
        "url": STORY["url"],
        "image": STORY["image"],
        "tag": "walrus-our-planet",
        "receipt": "c123.1f.abc",
    }


def _assert_cut(cut: str, original: str) -> None:
    """`cut` is a non-empty prefix of `original` ending in an ellipsis."""
    assert cut.endswith("…") and len(cut) > 1
    assert original.startswith(cut.removesuffix("…"))


@pytest.mark.parametrize(
    ("title", "body", "title_cut"),
    [
        ("T", "é" * 5000, False),  # 2-byte characters in the body
        ("x" * 2000, "y" * 10000, False),  # a long title still leaves room for some body
        ("🦭" * 3000, "body", True),  # 4-byte characters: the body goes first, then the title is cut
    ],
)
def test_long_texts_are_cut_not_refused(title, body, title_cut):
    story = {**STORY, "title": title, "body": body}
    rendered = build_template("c123", story).render("c123.ffffffff." + "A" * 16)
    # Within the limit, and cut no further than it takes (the receipt's room aside).
    assert MAX_PAYLOAD_BYTES - 2 * RECEIPT_ROOM < len(rendered) <= MAX_PAYLOAD_BYTES
    message = json.loads(rendered)  # valid UTF-8 JSON: cut on a character boundary
    others = {k: v for k, v in message.items() if k not in ("title", "body", "receipt")}
    assert others == {"v": 1, "campaign": "c123", "url": STORY["url"], "image": STORY["image"], "tag": STORY["id"]}
    if title_cut:
        assert message["body"] == ""
        _assert_cut(message["title"], title)
    else:
        assert message["title"] == title
        _assert_cut(message["body"], body)


def test_body_is_cut_before_the_title():
    story = {**STORY, "title": "Short title", "body": "b" * 5000}
    message = json.loads(build_template("c1", story).render("r"))
    assert message["title"] == "Short title"
    assert message["body"].endswith("…") and len(message["body"]) > 2000


@pytest.mark.parametrize("story_id", ["a", "walrus-our-planet", "x" * 128, "ünïcode/ids:1"])
def test_topic_header_is_32_base64url_chars(story_id):
    topic = topic_header(story_id)
    assert len(topic) == 32 and "=" not in topic
    assert len(base64.urlsafe_b64decode(topic)) == 24
    assert topic == topic_header(story_id)


def test_headers_default_ttl_is_four_hours_never_zero():
    story = {k: v for k, v in STORY.items() if k not in ("ttl", "urgency")}
    headers = PushHeaders.for_story(story)
    assert headers.ttl == 14400 and headers.urgency == "normal"

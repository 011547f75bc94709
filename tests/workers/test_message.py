"""Push payload shape, size limit, Topic header; receipts; status classification."""

from __future__ import annotations

import base64
import json

import pytest

from benchmarks.common import WALRUS_STORY
from service import receipts
from workers.delivery import Outcome, classify, parse_retry_after
from workers.message import MAX_PAYLOAD_BYTES, PushHeaders, build_template, topic_header

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


@pytest.mark.parametrize(
    ("title", "body"),
    [("T", "é" * 5000), ("🦭" * 3000, "body"), ("x" * 2000, "y" * 10000)],
)
def test_long_texts_are_cut_not_refused(title, body):
    story = {**STORY, "title": title, "body": body}
    rendered = build_template("c123", story).render("c123.ffffffff." + "A" * 16)
    assert len(rendered) <= MAX_PAYLOAD_BYTES
    message = json.loads(rendered)  # valid UTF-8 JSON: cut on a character boundary
    if len(body) > 2000:
        assert message["body"].endswith("…")
    assert message["title"] == title or message["title"].endswith("…")
    assert message["body"] == "" or body.startswith(message["body"][:-1]) or message["body"] == body


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


def test_receipts_verify_and_refuse_forgeries():
    key, other = b"k" * 32, b"o" * 32
    token = receipts.mint(key, "c0ffee", 1234)
    assert receipts.verify(key, token) == receipts.Receipt("c0ffee", 1234)
    assert receipts.verify(other, token) is None
    campaign, _hex_id, mac = token.split(".")
    assert receipts.verify(key, f"{campaign}.{1235:x}.{mac}") is None
    assert receipts.verify(key, "garbage") is None
    assert len(token) < 40


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (201, Outcome.SENT),
        (202, Outcome.SENT),
        (404, Outcome.EXPIRED),
        (410, Outcome.EXPIRED),
        (429, Outcome.RETRY),
        (503, Outcome.RETRY),
        (406, Outcome.RETRY),
        (500, Outcome.RETRY),
        (502, Outcome.RETRY),
        (301, Outcome.FAILED),
        (400, Outcome.FAILED),
        (401, Outcome.FAILED),
        (403, Outcome.FAILED),
        (413, Outcome.FAILED),
    ],
)
def test_classify(status, outcome):
    result = classify(status, None, 0.0)
    assert result.outcome is outcome
    assert result.status == status


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after("120", 0) == 120
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480 - 60) == 60
    assert parse_retry_after("soon", 0) is None
    assert classify(429, "30", 0).retry_after == 30

"""The CMS webhook: Standard Webhooks signatures, validation, idempotency, campaign lifecycle."""

from __future__ import annotations

import base64
import hmac
import json
import time
import uuid

import pytest
from rq import Queue
from rq.registry import ScheduledJobRegistry

from service.push_text import MAX_PAYLOAD_BYTES
from service.queueing import campaign_job_id
from tests.helpers.cms import STORY, post, signed


def test_published_creates_one_queued_campaign(client, webhook_secret, redis_client, settings):
    response = post(client, webhook_secret, {"type": "story.published", "data": STORY})
    assert response.status_code == 202
    answer = response.get_json()
    assert answer["status"] == "queued"
    queue = Queue(settings.queue_name, connection=redis_client)
    assert queue.job_ids == [campaign_job_id(answer["campaign"])]
    # same story again, new message id: same campaign, nothing queued twice
    again = post(client, webhook_secret, {"type": "story.published", "data": STORY})
    assert again.status_code == 200 and again.get_json()["campaign"] == answer["campaign"]
    assert len(queue.job_ids) == 1


def test_repeated_webhook_id_answers_the_same_campaign(client, webhook_secret):
    first = post(client, webhook_secret, {"type": "story.published", "data": STORY}, message_id="msg_same")
    second = post(client, webhook_secret, {"type": "story.published", "data": STORY}, message_id="msg_same")
    assert first.status_code == 202 and second.status_code == 200
    assert first.get_json()["campaign"] == second.get_json()["campaign"]


def test_several_signatures_one_valid_is_accepted(client, webhook_secret):
    body, headers = signed(webhook_secret, {"type": "story.published", "data": STORY})
    headers["webhook-signature"] = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= " + headers["webhook-signature"]
    assert client.post("/webhooks/cms", data=body, headers=headers).status_code == 202


@pytest.mark.parametrize("tamper", ["signature", "body", "missing", "stale", "future"])
def test_bad_signatures_are_401(client, webhook_secret, tamper):
    payload = {"type": "story.published", "data": STORY}
    timestamp = {"stale": time.time() - 600, "future": time.time() + 600}.get(tamper)
    body, headers = signed(webhook_secret, payload, timestamp=timestamp)
    if tamper == "signature":
        headers["webhook-signature"] = "v1,ZmFrZQ=="
    elif tamper == "body":
        body = body.replace("walrus", "wolf")
    elif tamper == "missing":
        del headers["webhook-signature"]
    response = client.post("/webhooks/cms", data=body, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"


def test_no_secret_configured_refuses_everything(settings, vapid_key, webhook_secret):
    from service import create_app

    client = create_app(settings.with_overrides(webhook_secret=None)).test_client()
    assert post(client, webhook_secret, {"type": "story.published", "data": STORY}).status_code == 401


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"title": ""}, "data.title"),
        ({"url": "javascript:alert(1)"}, "data.url"),
        ({"topics": ["knitting"]}, "data.topics"),
        ({"topics": []}, "data.topics"),
        ({"ttl": 0}, "data.ttl"),
        ({"urgency": "now"}, "data.urgency"),
        ({"send_at": "2026-11-28T09:00:00"}, "data.send_at"),
        ({"id": None}, "data.id"),
    ],
)
def test_invalid_payload_is_422_naming_the_field(client, webhook_secret, change, field):
    response = post(client, webhook_secret, {"type": "story.published", "data": {**STORY, **change}})
    assert response.status_code == 422
    assert response.get_json()["error"]["field"] == field


def test_unknown_type_is_422(client, webhook_secret):
    response = post(client, webhook_secret, {"type": "story.deleted", "data": STORY})
    assert response.status_code == 422 and response.get_json()["error"]["field"] == "type"


def test_send_at_in_the_future_is_scheduled_with_rq(client, webhook_secret, redis_client, settings, store):
    send_at = time.time() + 3600
    response = post(client, webhook_secret, {"type": "story.published", "data": {**STORY, "send_at": send_at}})
    assert response.status_code == 202
    answer = response.get_json()
    assert answer["status"] == "scheduled"
    registry = ScheduledJobRegistry(settings.queue_name, connection=redis_client)
    assert registry.get_job_ids() == [campaign_job_id(answer["campaign"])]
    # Never early: RQ keeps whole seconds, so the time it holds is send_at rounded up.
    scheduled = registry.get_scheduled_time(campaign_job_id(answer["campaign"])).timestamp()
    assert send_at <= scheduled < send_at + 1
    assert store.campaigns.get(answer["campaign"])["state"] == "scheduled"


def test_updated_refreshes_text_and_unpublished_cancels(client, webhook_secret, store):
    campaign = post(client, webhook_secret, {"type": "story.published", "data": STORY}).get_json()["campaign"]
    updated = {**STORY, "title": "Updated: the walrus scene", "body": "New text"}
    response = post(client, webhook_secret, {"type": "story.updated", "data": updated})
    assert response.status_code == 200 and response.get_json()["campaign"] == campaign
    assert store.campaigns.story(campaign)["title"] == "Updated: the walrus scene"
    response = post(client, webhook_secret, {"type": "story.unpublished", "data": {"id": STORY["id"]}})
    assert response.status_code == 200
    assert response.get_json() == {"campaign": campaign, "status": "cancelled"}
    # a cancelled campaign's text is no longer changed
    post(client, webhook_secret, {"type": "story.updated", "data": {**STORY, "title": "Too late"}})
    assert store.campaigns.story(campaign)["title"] == "Updated: the walrus scene"


def test_update_or_unpublish_of_unknown_story_is_404(client, webhook_secret):
    assert post(client, webhook_secret, {"type": "story.updated", "data": STORY}).status_code == 404
    response = post(client, webhook_secret, {"type": "story.unpublished", "data": {"id": "nope"}})
    assert response.status_code == 404 and response.get_json()["error"]["field"] == "data.id"


# -- a careless CMS -------------------------------------------------------------------


def test_a_whole_article_is_accepted_and_cut_to_what_a_push_carries(client, webhook_secret, store):
    """The issue's row: a 9,000-character body (the request is far over the browser API's
    8 KiB) is a 202, not a 413 the CMS would retry forever; title and body are cut with "…"."""
    title, body = "Walrus " * 500, "The director said it was the hardest thing. " * 205
    assert len(body) > 9000 and len((title + body).encode()) > 8 * 1024
    story = {**STORY, "title": title, "body": body}
    response = post(client, webhook_secret, {"type": "story.published", "data": story})
    assert response.status_code == 202, response.get_json()
    story = store.campaigns.story(response.get_json()["campaign"])
    for field, text in (("title", title), ("body", body)):
        assert story[field].endswith("…") and text.startswith(story[field][:-1])
        assert len(story[field].encode()) <= MAX_PAYLOAD_BYTES


def test_text_that_fits_is_kept_as_sent(client, webhook_secret, store):
    text = "é" * 1299  # 2,598 bytes: under the payload limit, so not cut
    response = post(client, webhook_secret, {"type": "story.published", "data": {**STORY, "body": text}})
    assert store.campaigns.story(response.get_json()["campaign"])["body"] == text


def test_webhook_body_limit_is_256_kib(client, webhook_secret):
    near = {"type": "story.published", "data": {**STORY, "body": "x" * (250 * 1024)}}
    assert post(client, webhook_secret, near).status_code == 202
    over = {"type": "story.published", "data": {**STORY, "id": "other", "body": "x" * (257 * 1024)}}
    response = post(client, webhook_secret, over)
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "too_large"


@pytest.mark.parametrize(
    "send_at",
    [time.time() + 400 * 86400, "9999-12-31T23:59:59Z", "inf", "NaN", 1e300, "1e999"],
)
def test_send_at_must_be_finite_and_at_most_a_year_ahead(client, webhook_secret, send_at):
    response = post(client, webhook_secret, {"type": "story.published", "data": {**STORY, "send_at": send_at}})
    assert response.status_code == 422
    assert response.get_json()["error"]["field"] == "data.send_at"


def signed_raw(secret: str, body: bytes, content_type: str = "application/json") -> dict:
    """Headers for raw bytes, signed by hand as the Standard Webhooks spec says (the library
    signs only text, and these bodies need not be UTF-8 or JSON)."""
    message_id, timestamp = f"msg_{uuid.uuid4().hex}", str(int(time.time()))
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.digest(key, f"{message_id}.{timestamp}.".encode() + body, "sha256")
    return {
        "webhook-id": message_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        "content-type": content_type,
    }


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"", 400),
        (b"[" * 1500 + b"]" * 1500, 400),  # deeper than the JSON parser's recursion limit
        (b'{"type": "story.published", "data": ' + b"1" * 5000 + b"}", 400),  # over Python's int digits limit
        (b'{"type": "story.published", "data": NaN}', 400),
        (b'{"type": "story.published", "data": {"id": "\\ud800"}}', 400),  # a lone surrogate
        # not UTF-8: Standard Webhooks signs text, so these cannot be verified
        (json.dumps({"type": "story.published", "data": STORY}).encode("utf-16"), 401),
        (b"\xff\xfe\xfa", 401),
        (b'"just a string"', 422),
        (b'{"type": "story.published", "data": []}', 422),
        (b'{"type": "story.published", "data": {"id": "x", "ttl": 1e400}}', 400),
        (b'{"type": "story.published", "type": "story.unpublished", "data": {"id": "nope"}}', 404),  # last key wins
    ],
)
def test_hostile_bodies_are_refused_never_500(client, webhook_secret, body, status):
    response = client.post("/webhooks/cms", data=body, headers=signed_raw(webhook_secret, body))
    assert response.status_code == status, response.get_json()
    assert set(response.get_json()["error"]) == {"code", "message", "field"}


def test_wrong_content_type_is_still_read_as_json(client, webhook_secret):
    body = json.dumps({"type": "story.published", "data": STORY}).encode()
    response = client.post("/webhooks/cms", data=body, headers=signed_raw(webhook_secret, body, "text/plain"))
    assert response.status_code == 202

"""Fan-out in-process: real Redis, real RQ jobs (SimpleWorker, burst), real HTTPS simulator.

Every message is decrypted by the simulator with the subscriber's private key and
its VAPID JWT verified against the subscription's applicationServerKey.
"""

from __future__ import annotations

import json
import time

import pytest
from rq import Queue
from rq.registry import ScheduledJobRegistry

from service.store import keys
from tests.helpers.cms import STORY, post, publish
from tests.helpers.fanout import drain, next_job, subscribe
from workers.jobs import send_batch
from workers.message import MAX_PAYLOAD_BYTES, topic_header
from workers.runner import StorypushWorker


def test_every_follower_gets_exactly_one_decryptable_message(fanout, sim, vapid_key, webhook_secret, redis_client):
    client = fanout.test_client()
    store = fanout.extensions["storypush"].store
    followers = sim.mint(45, vapid_key.public_bytes)
    others = sim.mint(5, vapid_key.public_bytes)
    subscribe(client, followers[:30], ["animals"]) + subscribe(client, followers[30:], ["tv-and-film", "animals"])
    subscribe(client, others, ["sport"])
    campaign = publish(fanout, webhook_secret)
    drain(redis_client, "storypush")
    messages = sim.messages()
    assert len(messages) == 45
    by_token = {m.token: m for m in messages}
    assert set(by_token) == {s["endpoint"].rsplit("/", 1)[1] for s in followers}
    for message in messages:
        assert message.decrypted, message.error
        body = message.json()
        assert body["v"] == 1 and body["campaign"] == campaign
        assert body["title"] == STORY["title"] and body["body"] == STORY["body"]
        assert body["url"] == STORY["url"] and body["image"] == STORY["image"]
        assert body["tag"] == STORY["id"]
        assert body["receipt"].startswith(campaign + ".")
        assert message.ttl == 14400 and message.urgency == "normal"
        assert message.topic == topic_header(STORY["id"])
        assert message.claims["aud"] == sim.origin
        assert message.claims["sub"].startswith("mailto:")
    state = store.campaigns.get(campaign)
    assert state["state"] == "done"
    assert (state["targeted"], state["sent"], state["failed"], state["expired"], state["retrying"]) == (45, 45, 0, 0, 0)
    assert state["started_at"] <= state["finished_at"]
    assert sim.stats()["rejected"] == 0


def test_a_story_too_long_for_a_push_still_goes_out_cut(fanout, sim, vapid_key, webhook_secret, redis_client):
    """A CMS sends a whole article (12 KB of JSON, over the browser API's 8 KiB limit): the
    webhook takes it, and every follower decrypts a message of at most 2,600 bytes whose
    text is the story's own beginning, cut with an ellipsis."""
    subs = sim.mint(3, vapid_key.public_bytes)
    subscribe(fanout.test_client(), subs, ["animals"])
    body = "Viewers say the walrus scene is the hardest thing they have watched this year. " * 120
    campaign = publish(fanout, webhook_secret, {**STORY, "body": body})
    drain(redis_client, "storypush")
    messages = sim.messages()
    assert len(messages) == 3
    for message in messages:
        assert message.decrypted, message.error
        assert len(message.plaintext) <= MAX_PAYLOAD_BYTES
        pushed = message.json()
        assert pushed["campaign"] == campaign and pushed["title"] == STORY["title"]
        assert pushed["body"].endswith("…") and len(pushed["body"]) > 1000
        assert body.startswith(pushed["body"][:-1])


def test_expired_subscriptions_are_pruned(fanout, sim, vapid_key, webhook_secret, redis_client):
    client = fanout.test_client()
    store = fanout.extensions["storypush"].store
    subs = sim.mint(6, vapid_key.public_bytes)
    subscribe(client, subs, ["animals"])
    sim.fail(subs[0]["endpoint"], [410])
    sim.fail(subs[1]["endpoint"], [404])
    campaign = publish(fanout, webhook_secret)
    drain(redis_client, "storypush")
    state = store.campaigns.get(campaign)
    assert (state["sent"], state["expired"], state["state"]) == (4, 2, "done")
    assert state["errors"] == {"http_410": 1, "http_404": 1}
    assert store.subscriptions.get_by_endpoint(subs[0]["endpoint"]) is None
    assert store.subscriptions.get_by_endpoint(subs[1]["endpoint"]) is None
    assert store.subscriptions.count() == 4


def test_throttled_and_failing_pushes_are_retried_and_delivered_once(
    fanout, sim, vapid_key, webhook_secret, redis_client
):
    client = fanout.test_client()
    store = fanout.extensions["storypush"].store
    subs = sim.mint(8, vapid_key.public_bytes)
    subscribe(client, subs, ["animals"])
    sim.fail(subs[0]["endpoint"], [429], retry_after="1")
    sim.fail(subs[1]["endpoint"], [503, 500])
    sim.drop(subs[2]["endpoint"], times=1)
    campaign = publish(fanout, webhook_secret)
    drain(redis_client, "storypush", timeout=60)
    for sub in subs:
        assert len(sim.messages(sub["endpoint"])) == 1, sub["endpoint"][-10:]
    state = store.campaigns.get(campaign)
    assert (state["sent"], state["failed"], state["retrying"], state["state"]) == (8, 0, 0, "done")
    rejected = {r["status"] for r in sim.rejections()}
    assert {429, 503, 500, None} <= rejected


def test_permanent_refusals_fail_without_deleting_at_once(fanout, sim, vapid_key, webhook_secret, redis_client):
    client = fanout.test_client()
    store = fanout.extensions["storypush"].store
    subs = sim.mint(3, vapid_key.public_bytes)
    subscribe(client, subs, ["animals"])
    sim.fail(subs[0]["endpoint"], [403])
    sim.fail(subs[1]["endpoint"], [413])
    campaign = publish(fanout, webhook_secret)
    drain(redis_client, "storypush")
    state = store.campaigns.get(campaign)
    assert (state["sent"], state["failed"]) == (1, 2)
    assert state["errors"] == {"http_403": 1, "http_413": 1}
    assert store.subscriptions.count() == 3  # one refusal deletes nobody


def test_gives_up_after_max_attempts(fanout, sim, vapid_key, webhook_secret, redis_client):
    client = fanout.test_client()
    store = fanout.extensions["storypush"].store
    subs = sim.mint(2, vapid_key.public_bytes)
    subscribe(client, subs, ["animals"])
    sim.fail(subs[0]["endpoint"], 500, always=True)
    campaign = publish(fanout, webhook_secret)
    # backoff is 5 s × 2^n with jitter; shorten the wait by running the delayed jobs early
    queue = Queue("storypush", connection=redis_client)
    deadline = time.monotonic() + 60
    while store.campaigns.get(campaign)["state"] != "done" and time.monotonic() < deadline:
        scheduled = ScheduledJobRegistry(queue=queue)
        for job_id in scheduled.get_job_ids():
            queue.enqueue_job(queue.fetch_job(job_id))
            scheduled.remove(job_id)
        StorypushWorker([queue], connection=redis_client).work(burst=True)
    state = store.campaigns.get(campaign)
    assert (state["state"], state["sent"], state["failed"], state["retrying"]) == ("done", 1, 1, 0)
    assert state["errors"] == {"http_500_gave_up": 1}
    assert len([r for r in sim.rejections(subs[0]["endpoint"]) if r["status"] == 500]) == 3


def test_rerun_of_a_finished_or_half_done_batch_sends_nothing_twice(
    fanout, sim, vapid_key, webhook_secret, redis_client
):
    client = fanout.test_client()
    store = fanout.extensions["storypush"].store
    subs = sim.mint(10, vapid_key.public_bytes)
    ids = subscribe(client, subs, ["animals"])
    campaign = publish(fanout, webhook_secret)
    drain(redis_client, "storypush")
    assert len(sim.messages()) == 10
    # a crashed worker's job run again: every id already has its sent marker
    store.client.srem(keys.campaign_units_done(campaign), "0")
    store.client.hset(keys.campaign(campaign), "state", "sending")
    send_batch(campaign, 0, max(ids) + 8)
    assert len(sim.messages()) == 10


def test_update_changes_later_batches_and_unpublish_cancels(
    fanout, sim, vapid_key, webhook_secret, redis_client, monkeypatch
):
    monkeypatch.setattr("workers.dispatch.RUN_AHEAD", False)  # one batch per job, to stop in between
    client = fanout.test_client()
    store = fanout.extensions["storypush"].store
    subs = sim.mint(60, vapid_key.public_bytes)
    subscribe(client, subs, ["animals"])
    campaign = publish(fanout, webhook_secret)
    queue = Queue("storypush", connection=redis_client)
    # run the campaign job only: batches are queued, nothing sent yet
    job = next_job(queue)
    job.perform()
    assert len(queue.job_ids) == 3
    updated = {**STORY, "title": "Updated walrus title"}
    assert post(client, webhook_secret, {"type": "story.updated", "data": updated}).status_code == 200
    first = next_job(queue)
    first.perform()
    assert {json.loads(m.plaintext)["title"] for m in sim.messages()} == {"Updated walrus title"}
    first_batch = len(sim.messages())
    assert 20 <= first_batch < 28  # batches end on whole bytes of the audience bitmap
    assert post(client, webhook_secret, {"type": "story.unpublished", "data": {"id": STORY["id"]}}).status_code == 200
    drain(redis_client, "storypush")
    assert len(sim.messages()) == first_batch  # the other batches were skipped
    assert store.campaigns.get(campaign)["state"] == "cancelled"


def test_campaign_with_no_followers_is_done(fanout, webhook_secret, redis_client):
    campaign = publish(fanout, webhook_secret, {**STORY, "topics": ["lifestyle"]})
    drain(redis_client, "storypush")
    state = fanout.extensions["storypush"].store.campaigns.get(campaign)
    assert (state["state"], state["targeted"]) == ("done", 0)


def test_receipts_count_once_and_forgeries_are_refused(fanout, sim, vapid_key, webhook_secret, redis_client):
    client = fanout.test_client()
    store = fanout.extensions["storypush"].store
    subscribe(client, sim.mint(2, vapid_key.public_bytes), ["animals"])
    campaign = publish(fanout, webhook_secret)
    drain(redis_client, "storypush")
    receipts = [m.json()["receipt"] for m in sim.messages()]
    for receipt in receipts:
        for kind in ("delivered", "delivered", "clicked"):
            assert client.post("/api/v1/events", json={"type": kind, "receipt": receipt}).status_code == 204
    forged = receipts[0][:-2] + ("AA" if not receipts[0].endswith("AA") else "BB")
    response = client.post("/api/v1/events", json={"type": "clicked", "receipt": forged})
    assert response.status_code == 403 and response.get_json()["error"]["field"] == "receipt"
    state = store.campaigns.get(campaign)
    assert (state["delivered"], state["clicked"], state["dismissed"]) == (2, 2, 0)


def test_a_batch_runs_ahead_and_the_taken_batches_jobs_skip(fanout, sim, vapid_key, webhook_secret, redis_client):
    client = fanout.test_client()
    store = fanout.extensions["storypush"].store
    subscribe(client, sim.mint(70, vapid_key.public_bytes), ["animals"])
    campaign = publish(fanout, webhook_secret)
    queue = Queue("storypush", connection=redis_client)
    next_job(queue).perform()  # the campaign job
    batches = len(queue.job_ids)
    assert batches >= 3
    summary = next_job(queue).perform()
    assert len(summary["ran_ahead"]) == batches - 1  # one job sent the whole campaign
    assert len(sim.messages()) == 70
    assert store.campaigns.get(campaign)["state"] == "done"
    for _ in range(batches - 1):
        skipped = next_job(queue).perform()
        assert skipped == {"skipped": "already finished"}
    assert len(sim.messages()) == 70


def test_a_batch_leased_by_another_worker_is_not_sent_twice(fanout, sim, vapid_key, webhook_secret, redis_client):
    from workers.jobs import UnitBusy

    client = fanout.test_client()
    store = fanout.extensions["storypush"].store
    subscribe(client, sim.mint(5, vapid_key.public_bytes), ["animals"])
    campaign = publish(fanout, webhook_secret)
    queue = Queue("storypush", connection=redis_client)
    next_job(queue).perform()
    batch = next_job(queue)
    assert store.campaigns.acquire_lease(campaign, "0", "another-worker", 30)
    with pytest.raises(UnitBusy):
        batch.perform()
    assert sim.messages() == []
    store.campaigns.release_lease(campaign, "0", "another-worker")
    batch.perform()
    assert len(sim.messages()) == 5

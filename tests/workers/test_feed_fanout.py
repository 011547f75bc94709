"""Feeds to pushes in-process: a real HTTP feed server, real Redis, real RQ jobs run by our
worker class, and the HTTPS push-service simulator decrypting every message.

Instead of waiting out each feed's `every`, a test hands the feed's scheduled poll job to the
queue early, exactly as RQ's scheduler does when it falls due (`tests/e2e/test_feeds_e2e.py`
waits in real time with real worker processes).
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from rq import Queue
from rq.registry import ScheduledJobRegistry

from service import create_app, feeds
from service.settings import FeedSettings
from tests.helpers.admin import BEARER
from tests.helpers.cms import publish
from tests.helpers.fanout import subscribe
from tests.helpers.feed_documents import Item, ghost_rss, json_feed, numbered
from workers.runner import StorypushWorker
from workers.runtime import Runtime, set_runtime


@pytest.fixture
def feed_fanout(fanout_settings, feed_server, vapid_key, redis_client):
    settings = fanout_settings.with_overrides(feeds=FeedSettings(trusted_hosts=(feed_server.authority,), timeout=3))
    app = create_app(settings)
    set_runtime(Runtime(settings))
    yield app
    set_runtime(None)


def story(n: int, **changes) -> Item:
    return numbered(n, "feed-story", "Walrus update", **changes)


def add_feed(client, url: str, **spec) -> str:
    response = client.post("/admin/api/feeds", json={"url": url, **spec}, headers=BEARER)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def advance(app, redis_client, *feed_ids: str) -> None:
    """Each feed's next poll falls due now; run it and whatever it starts until the queue is empty."""
    store = app.extensions["storypush"].store
    queue = Queue("storypush", connection=redis_client)
    scheduled = ScheduledJobRegistry(queue=queue)
    for feed_id in feed_ids:
        job_id = feeds.poll_job_id(feed_id, store.feeds.current_slot(feed_id))
        if job_id in scheduled:
            scheduled.remove(job_id)
            queue.enqueue_job(queue.fetch_job(job_id), at_front=True)
    StorypushWorker([queue], connection=redis_client).work(burst=True)


def received(sim) -> Counter:
    return Counter((m.token, m.json()["tag"]) for m in sim.messages())


def test_a_new_entry_reaches_each_follower_exactly_once(feed_fanout, sim, vapid_key, feed_server, redis_client):
    client = feed_fanout.test_client()
    store = feed_fanout.extensions["storypush"].store
    followers = sim.mint(25, vapid_key.public_bytes)
    others = sim.mint(5, vapid_key.public_bytes)
    subscribe(client, followers, ["animals"])
    subscribe(client, others, ["sport"])
    feed_server.serve("/rss/", ghost_rss([story(1), story(2)]))
    feed_id = add_feed(client, feed_server.url("/rss/"), every=10)

    StorypushWorker([Queue("storypush", connection=redis_client)], connection=redis_client).work(burst=True)
    assert store.feeds.get(feed_id).entries_seen == 2
    assert sim.messages() == [] and store.campaigns.list_ids() == []  # the first poll sends nothing

    feed_server.serve("/rss/", ghost_rss([story(3), story(2), story(1)]))
    advance(feed_fanout, redis_client, feed_id)
    messages = sim.messages()
    assert sorted(m.token for m in messages) == sorted(f["endpoint"].rsplit("/", 1)[1] for f in followers)
    for message in messages:
        assert message.decrypted, message.error
        body = message.json()
        assert (body["title"], body["tag"]) == ("Walrus update 3", "feed-story-3")
        assert body["url"] == "https://publisher.example/feed-story-3/"
        assert body["image"] == "https://publisher.example/img/feed-story-3.jpg"
        assert body["body"] == "A summary with markup & an entity."
    campaign = store.campaigns.get(store.campaigns.id_for_story("feed-story-3"))
    assert (campaign["state"], campaign["sent"], campaign["targeted"]) == ("done", 25, 25)

    advance(feed_fanout, redis_client, feed_id)  # the same document again
    assert len(sim.messages()) == 25
    assert store.feeds.get(feed_id).polls["polls_ok"] == 3


def test_a_story_by_webhook_and_feed_is_pushed_once(feed_fanout, sim, vapid_key, feed_server, redis_client,
                                                    webhook_secret):  # fmt: skip
    client = feed_fanout.test_client()
    followers = sim.mint(10, vapid_key.public_bytes)
    subscribe(client, followers, ["animals"])
    feed_server.serve("/feed.json", json_feed([]))
    feed_id = add_feed(client, feed_server.url("/feed.json"), every=10)
    advance(feed_fanout, redis_client)
    webhook_story = {"id": "feed-story-9", "title": "By webhook first", "url": "https://publisher.example/feed-story-9/",
                     "topics": ["animals"]}  # fmt: skip
    publish(feed_fanout, webhook_secret, webhook_story)
    feed_server.serve("/feed.json", json_feed([story(9), story(10)]))
    advance(feed_fanout, redis_client, feed_id)
    counts = received(sim)
    for follower in followers:
        token = follower["endpoint"].rsplit("/", 1)[1]
        assert counts[(token, "feed-story-9")] == 1 and counts[(token, "feed-story-10")] == 1
    assert len(sim.messages()) == 20
    titles = {m.json()["tag"]: m.json()["title"] for m in sim.messages()}
    assert titles["feed-story-9"] == "By webhook first"


def test_a_broken_feed_never_stops_the_others(feed_fanout, sim, vapid_key, feed_server, redis_client):
    client = feed_fanout.test_client()
    store = feed_fanout.extensions["storypush"].store
    followers = sim.mint(5, vapid_key.public_bytes)
    subscribe(client, followers, ["animals"])
    feed_server.serve("/broken", "<html>500</html>", status=500)
    feed_server.serve("/rss/", ghost_rss([story(1)]))
    broken = add_feed(client, feed_server.url("/broken"), every=10)
    good = add_feed(client, feed_server.url("/rss/"), every=10)
    advance(feed_fanout, redis_client)
    feed_server.serve("/rss/", ghost_rss([story(2), story(1)]))
    advance(feed_fanout, redis_client, broken, good)
    assert Counter(m.json()["tag"] for m in sim.messages()) == {"feed-story-2": 5}
    state = {f["id"]: f for f in client.get("/admin/api/feeds", headers=BEARER).get_json()["feeds"]}
    assert state[broken]["failures"] == 2 and state[broken]["last_error"].startswith("http_500")
    assert state[good]["failures"] == 0 and state[good]["last_error"] is None
    assert store.feeds.current_slot(broken) > store.feeds.current_slot(good)  # backing off


def test_the_workers_maintenance_restarts_a_stalled_schedule(feed_fanout, feed_server, redis_client):
    client = feed_fanout.test_client()
    store = feed_fanout.extensions["storypush"].store
    feed_server.serve("/rss/", ghost_rss([story(1)]))
    feed_id = add_feed(client, feed_server.url("/rss/"), every=60)
    advance(feed_fanout, redis_client)
    # Lose the scheduled poll (as a worker killed at the wrong moment or a Redis outage might).
    queue = Queue("storypush", connection=redis_client)
    ScheduledJobRegistry(queue=queue).remove(feeds.poll_job_id(feed_id, store.feeds.current_slot(feed_id)))
    store.feeds.set_slot(feed_id, int((time.time() - 600) * 1000))
    StorypushWorker([queue], connection=redis_client).work(burst=True)  # maintenance runs first
    feed = store.feeds.get(feed_id)
    assert feed.polls["polls_ok"] == 2 and len(feed_server.hits_for("/rss/")) == 2
    assert store.feeds.current_slot(feed_id) / 1000 == pytest.approx(time.time() + 60, abs=5)

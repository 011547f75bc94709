"""Feeds end to end with real processes and real time: `storypush web`, two `storypush worker`
processes (RQ with its scheduler, nothing else started), a local HTTP server serving the
publisher's feeds and the HTTPS push-service simulator decrypting every push.
"""

from __future__ import annotations

import time
from collections import Counter
from itertools import pairwise

import pytest
import requests

from tests.helpers.admin import BEARER
from tests.helpers.cms import publish_over_http as publish
from tests.helpers.fanout import subscribe_all
from tests.helpers.feed_documents import MALFORMED, Item, ghost_rss, numbered
from tests.helpers.processes import wait_for

pytestmark = pytest.mark.slow
EVERY = 10


def story(n: int) -> Item:
    return numbered(n, "e2e-story", "Walrus report", categories=["Wildlife"])


def feeds(base: str) -> dict[str, dict]:
    response = requests.get(f"{base}/admin/api/feeds", headers=BEARER, timeout=5)
    assert response.status_code == 200, response.text
    return {feed["id"]: feed for feed in response.json()["feeds"]}


def add_feed(base: str, **body) -> str:
    response = requests.post(f"{base}/admin/api/feeds", json=body, headers=BEARER, timeout=5)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def next_poll(base: str, feed_id: str) -> None:
    """Wait until the feed has been polled once more from now (a full `every` cycle)."""
    polled = feeds(base)[feed_id]["last_polled_at"]
    wait_for(lambda: feeds(base)[feed_id]["last_polled_at"] != polled, 3 * EVERY, f"feed {feed_id} to poll again")


def pushes(sim) -> Counter:
    return Counter((m.token, m.json()["tag"]) for m in sim.messages())


def test_feeds_drive_pushes_through_real_workers(stack, stack_env, sim, vapid_key, webhook_secret, store, feed_server):
    stack_env["STORYPUSH_FEED_HOSTS"] = feed_server.authority
    stack.start_web()
    stack.start_worker()
    stack.start_worker()
    followers = sim.mint(30, vapid_key.public_bytes)
    subscribe_all(stack.base, followers, ["animals"])
    subscribe_all(stack.base, sim.mint(5, vapid_key.public_bytes), ["sport"])
    tokens = [f["endpoint"].rsplit("/", 1)[1] for f in followers]
    feed_server.serve("/rss/", ghost_rss([story(1), story(2)]))
    feed_server.serve("/broken.xml", MALFORMED)
    good = add_feed(stack.base, url=feed_server.url("/rss/"), every=EVERY, category_map="Wildlife=animals")
    broken = add_feed(stack.base, url=feed_server.url("/broken.xml"), every=EVERY)

    # The first poll records what is there and sends nothing.
    wait_for(lambda: feeds(stack.base)[good]["last_success_at"] is not None, 30, "the first poll")
    assert feeds(stack.base)[good]["entries_seen"] == 2
    assert sim.messages() == [] and store.campaigns.list_ids() == []

    # A new entry: each follower gets exactly one push, decrypted, with the entry's story.
    feed_server.serve("/rss/", ghost_rss([story(3), story(2), story(1)]))
    wait_for(lambda: store.campaigns.id_for_story("e2e-story-3") is not None, 3 * EVERY, "the new entry's campaign")
    campaign = store.campaigns.id_for_story("e2e-story-3")
    wait_for(lambda: store.campaigns.get(campaign)["state"] == "done", 60, "the campaign to finish")
    next_poll(stack.base, good)  # and one more poll of the same document sends nothing more
    counts = pushes(sim)
    assert all(counts[(token, "e2e-story-3")] == 1 for token in tokens)
    assert sum(counts.values()) == 30
    for message in sim.messages():
        assert message.decrypted, message.error
        body = message.json()
        assert (body["title"], body["url"]) == ("Walrus report 3", "https://publisher.example/e2e-story-3/")
        assert body["image"] == "https://publisher.example/img/e2e-story-3.jpg" and body["campaign"] == campaign

    # The same story by webhook and then by the feed goes out once.
    webhook_story = {"id": "e2e-story-4", "title": "Walrus report 4", "url": "https://publisher.example/e2e-story-4/",
                     "topics": ["animals"]}  # fmt: skip
    by_webhook = publish(stack.base, webhook_secret, webhook_story)
    feed_server.serve("/rss/", ghost_rss([story(4), story(3), story(2), story(1)]))
    wait_for(lambda: feeds(stack.base)[good]["entries_seen"] == 4, 3 * EVERY, "the feed to see the entry")
    wait_for(lambda: store.campaigns.get(by_webhook)["state"] == "done", 60, "the webhook's campaign to finish")
    counts = pushes(sim)
    assert all(counts[(token, "e2e-story-4")] == 1 for token in tokens)
    assert sum(counts.values()) == 60
    assert store.campaigns.id_for_story("e2e-story-4") == by_webhook

    # The broken feed is recorded and retried with back-off; the good one never stopped.
    state = feeds(stack.base)
    assert state[broken]["failures"] >= 1 and state[broken]["last_error"].startswith("malformed")
    assert state[broken]["last_success_at"] is None
    assert state[good]["failures"] == 0 and state[good]["stories"] == 1
    health = requests.get(stack.base + "/metrics", timeout=5).text
    assert f'storypush_feed_failures{{feed="{broken}"}}' in health

    # Two workers, one feed: never two polls at the same moment, one per `every` at most.
    starts = [hit.at for hit in feed_server.hits_for("/rss/")]
    gaps = [later - earlier for earlier, later in pairwise(starts)]
    assert len(starts) >= 4 and min(gaps) > EVERY - 0.5, gaps
    assert time.time() - starts[-1] < 2 * EVERY + 5  # still polling

"""Polling feeds with real Redis, a real RQ queue and a real HTTP server serving the feeds.

Each poll here is the job's own body (`run_poll`) for the feed's current slot, so every
assertion is about what a worker would do; `tests/workers/test_feed_fanout.py` runs the
same through RQ workers up to decrypted pushes.
"""

from __future__ import annotations

import time

import pytest
from rq import Queue
from rq.registry import ScheduledJobRegistry

from service import feeds
from service.errors import Conflict
from service.feed_polling import PAGE_LOOKUPS
from service.feeds import FeedSpec, add_feed, run_poll, spec_context
from service.queueing import campaign_job_id
from service.state import AppState
from service.store import keys
from service.store.campaign_store import CampaignState
from service.store.feed_store import MAX_ENTRIES
from tests.helpers.cms import post
from tests.helpers.feed_documents import MALFORMED, Item, atom, ghost_rss, json_feed, numbered, rss091, wordpress_rss
from tests.helpers.feeds import poll


def item(n: int, **changes) -> Item:
    return numbered(n, "story", "Story number", **changes)


@pytest.fixture
def services(feed_settings, redis_client) -> AppState:
    return AppState(feed_settings)


def add(services: AppState, feed_server, path: str, document: str | None = None, **spec) -> str:
    if document is not None:
        feed_server.serve(path, document)
    data = {"url": feed_server.url(path), **spec}
    return add_feed(
        services, FeedSpec.model_validate(data, context=spec_context(services.settings, services.store))
    ).id_


def campaign_for(services: AppState, story_id: str) -> dict | None:
    campaign_id = services.store.campaigns.id_for_story(story_id)
    return services.store.campaigns.get(campaign_id) if campaign_id else None


def test_adding_a_feed_queues_its_first_poll_at_the_front(services, feed_server):
    queue = services.queue
    queue.enqueue("tests.helpers.jobs.explode", "a campaign batch already waiting")
    feed_id = add(services, feed_server, "/rss/", ghost_rss([item(1)]))
    slot = services.store.feeds.current_slot(feed_id)
    assert queue.job_ids[0] == feeds.poll_job_id(feed_id, slot)
    job = queue.fetch_job(queue.job_ids[0])
    assert job.func_name == feeds.POLL_JOB and job.args == (feed_id, slot)
    assert abs(slot / 1000 - time.time()) < 5


def test_first_poll_records_what_is_there_and_sends_nothing(services, feed_server):
    feed_id = add(services, feed_server, "/rss/", ghost_rss([item(1), item(2), item(3)]), every=60)
    assert poll(services, feed_id) == "primed"
    assert services.store.campaigns.list_ids() == []
    feed = services.store.feeds.get(feed_id)
    assert (feed.entries_seen, feed.failures, feed.stories, feed.title) == (3, 0, 0, "The Publisher")
    assert feed.last_polled_at == feed.last_success_at and feed.last_error is None
    # The next poll is scheduled with RQ's own scheduler, `every` seconds on.
    slot = services.store.feeds.current_slot(feed_id)
    assert slot / 1000 == pytest.approx(time.time() + 60, abs=5)
    scheduled = ScheduledJobRegistry(queue=services.queue)
    assert feeds.poll_job_id(feed_id, slot) in scheduled.get_job_ids()
    assert services.queue.fetch_job(feeds.poll_job_id(feed_id, slot)).enqueue_at_front


def test_a_poll_scheduled_for_later_never_runs_before_its_time(services, feed_server):
    """RQ keeps scheduled times in whole seconds, cut down; the poll's time is rounded up."""
    feed_id = add(services, feed_server, "/rss/", ghost_rss([item(1)]), every=60)
    at = time.time() + 10.75
    slot = feeds.schedule_poll(services, feed_id, at)
    assert slot is not None
    job = services.queue.fetch_job(feeds.poll_job_id(feed_id, slot))
    runs_at = ScheduledJobRegistry(queue=services.queue).get_scheduled_time(job).timestamp()
    assert at <= runs_at < at + 1


def test_a_new_entry_becomes_one_campaign_through_the_webhook_path(services, feed_server):
    feed_id = add(services, feed_server, "/rss/", ghost_rss([item(1)]))
    poll(services, feed_id)
    new = item(2, categories=["Animals", "TV and Film"])
    feed_server.serve("/rss/", ghost_rss([new, item(1)]))
    assert poll(services, feed_id) == "ok"
    campaign = campaign_for(services, "story-2")
    assert campaign["state"] == "queued"
    assert campaign["story"] == {
        "id": "story-2", "title": "Story number 2", "body": "A summary with markup & an entity.",
        "url": "https://publisher.example/story-2/", "image": "https://publisher.example/img/story-2.jpg",
        "topics": ["animals", "tv-and-film"], "ttl": 14400, "urgency": "normal",
    }  # fmt: skip
    assert campaign_job_id(campaign["id"]) in services.queue.job_ids
    assert campaign_for(services, "story-1") is None
    # Polled again, the same document sends nothing more.
    poll(services, feed_id)
    assert len(services.store.campaigns.list_ids()) == 1
    feed = services.store.feeds.get(feed_id)
    assert (feed.entries_seen, feed.stories) == (2, 1)


def test_several_new_entries_go_out_oldest_first(services, feed_server):
    feed_id = add(services, feed_server, "/rss/", ghost_rss([]))
    poll(services, feed_id)
    feed_server.serve("/rss/", ghost_rss([item(5), item(4), item(3)]))
    poll(services, feed_id)
    created = [services.store.campaigns.get(c)["story"]["id"] for c in reversed(services.store.campaigns.list_ids())]
    assert created == ["story-3", "story-4", "story-5"]


def test_a_story_by_webhook_and_by_feed_is_one_campaign(services, feed_server, client, webhook_secret):
    feed_id = add(services, feed_server, "/rss/", ghost_rss([]))
    poll(services, feed_id)
    story = {"id": "story-7", "title": "Seven", "url": "https://publisher.example/7", "topics": ["animals"]}
    by_webhook = post(client, webhook_secret, {"type": "story.published", "data": story})
    assert by_webhook.status_code == 202
    feed_server.serve("/rss/", ghost_rss([item(7), item(8)]))
    poll(services, feed_id)
    assert services.store.campaigns.id_for_story("story-7") == by_webhook.get_json()["campaign"]
    assert len(services.store.campaigns.list_ids()) == 2  # story-7 once, story-8
    # And the other way round: the webhook finds the campaign the feed made.
    again = post(client, webhook_secret, {"type": "story.published", "data": {**story, "id": "story-8"}})
    assert again.status_code == 200
    assert again.get_json()["campaign"] == services.store.campaigns.id_for_story("story-8")
    assert services.store.feeds.get(feed_id).stories == 1


def test_a_retitled_entry_updates_an_unfinished_campaign_only(services, feed_server):
    feed_id = add(services, feed_server, "/feed.json", json_feed([]), topics=["news"])
    poll(services, feed_id)
    feed_server.serve("/feed.json", json_feed([item(1)]))
    poll(services, feed_id)
    campaign = campaign_for(services, "story-1")
    feed_server.serve("/feed.json", json_feed([item(1, title="Story number 1, corrected")]))
    assert poll(services, feed_id) == "ok"
    assert campaign_for(services, "story-1")["story"]["title"] == "Story number 1, corrected"
    campaigns = services.store.campaigns
    campaigns.transition(campaign["id"], CampaignState.SENDING, (CampaignState.QUEUED,))
    campaigns.transition(campaign["id"], CampaignState.DONE, (CampaignState.SENDING,))
    feed_server.serve("/feed.json", json_feed([item(1, title="Too late to change")]))
    poll(services, feed_id)
    assert campaign_for(services, "story-1")["story"]["title"] == "Story number 1, corrected"
    assert len(campaigns.list_ids()) == 1


def test_a_retitled_entry_the_first_poll_recorded_sends_nothing(services, feed_server):
    feed_id = add(services, feed_server, "/rss/", ghost_rss([item(1)]))
    poll(services, feed_id)
    feed_server.serve("/rss/", ghost_rss([item(1, title="New title")]))
    poll(services, feed_id)
    assert services.store.campaigns.list_ids() == []


def test_entries_older_than_the_max_age_are_never_sent(services, feed_server):
    feed_id = add(services, feed_server, "/rss/", ghost_rss([]))
    poll(services, feed_id)
    day = 86400
    feed_server.serve(
        "/rss/", ghost_rss([item(1, published=time.time() - day - 60), item(2, published=time.time() - day + 600)])
    )
    poll(services, feed_id)
    assert campaign_for(services, "story-1") is None and campaign_for(services, "story-2") is not None
    assert services.store.feeds.get(feed_id).entries_seen == 2


def test_the_max_age_is_configurable(services, feed_server, feed_settings):
    services = AppState(feed_settings.with_overrides(feeds=feed_settings.feeds.__class__(
        trusted_hosts=feed_settings.feeds.trusted_hosts, max_age=300)))  # fmt: skip
    feed_id = add(services, feed_server, "/rss/", ghost_rss([]))
    poll(services, feed_id)
    feed_server.serve("/rss/", ghost_rss([item(1, published=time.time() - 400), item(2, published=time.time() - 100)]))
    poll(services, feed_id)
    assert campaign_for(services, "story-1") is None and campaign_for(services, "story-2") is not None


def test_undated_entries_of_old_formats_are_sent_when_new(services, feed_server):
    feed_id = add(services, feed_server, "/rss091", rss091([]), topics=["news"])
    poll(services, feed_id)
    feed_server.serve("/rss091", rss091([item(1)]))
    poll(services, feed_id)
    assert campaign_for(services, "https://publisher.example/story-1/")["story"]["topics"] == ["news"]


def test_category_map_then_names_then_the_feeds_topics(services, feed_server):
    feed_id = add(services, feed_server, "/wp/feed/", wordpress_rss([]), topics=["news"],
                  category_map="Wildlife=animals, Telly=tv-and-film")  # fmt: skip
    poll(services, feed_id)
    entries = [item(1, categories=["Wildlife", "Telly"]), item(2, categories=["Sport"]),
               item(3, categories=["Cooking"]), item(4, categories=[])]  # fmt: skip
    feed_server.serve("/wp/feed/", wordpress_rss(entries))
    poll(services, feed_id)
    topics = {n: campaign_for(services, f"story-{n}")["story"]["topics"] for n in (1, 2, 3, 4)}
    assert topics == {1: ["animals", "tv-and-film"], 2: ["sport"], 3: ["news"], 4: ["news"]}


def test_entries_with_no_topic_at_all_are_skipped_and_remembered(services, feed_server):
    feed_id = add(services, feed_server, "/atom", atom([]))
    poll(services, feed_id)
    feed_server.serve("/atom", atom([item(1, key="tag:p,2024:1", categories=["Cooking"])]))
    assert poll(services, feed_id) == "ok"
    assert services.store.campaigns.list_ids() == []
    assert services.store.feeds.get(feed_id).entries_seen == 1


def test_wordpress_guids_become_valid_story_ids(services, feed_server):
    feed_id = add(services, feed_server, "/wp/feed/", wordpress_rss([]))
    poll(services, feed_id)
    feed_server.serve("/wp/feed/", wordpress_rss([item(1, key="https://news.publisher.example/?p=123")]))
    poll(services, feed_id)
    campaign = campaign_for(services, "https://news.publisher.example/_3Fp_3D123")
    assert campaign["story"]["image"] == "https://publisher.example/img/story-1.jpg"  # from the content's <img>


def test_conditional_get_makes_an_unchanged_feed_a_cheap_success(services, feed_server):
    route = feed_server.serve("/rss/", ghost_rss([item(1)]), etag='"v1"')
    feed_id = add(services, feed_server, "/rss/")
    poll(services, feed_id)
    assert poll(services, feed_id) == "not_modified"
    assert feed_server.hits_for("/rss/")[-1].status == 304
    feed = services.store.feeds.get(feed_id)
    assert feed.polls == {"polls_ok": 1, "polls_not_modified": 1, "polls_failed": 0} and feed.failures == 0
    route.body, route.etag = ghost_rss([item(2), item(1)]).encode(), '"v2"'
    assert poll(services, feed_id) == "ok"
    assert campaign_for(services, "story-2") is not None
    assert feed_server.hits_for("/rss/")[-1].headers["If-None-Match"] == '"v1"'


@pytest.mark.parametrize(
    ("serve", "reason"),
    [({"body": "oops", "status": 500}, "http_500"), ({"body": MALFORMED}, "malformed"),
     ({"body": "x" * 10, "delay": 5}, "timeout"), ({"body": b"<rss>" + b" " * 6_000_000}, "too_large")],
)  # fmt: skip
def test_a_broken_feed_is_recorded_and_backs_off(services, feed_server, serve, reason):
    feed_server.serve("/rss/", **serve)
    feed_id = add(services, feed_server, "/rss/", every=30)
    for failures in (1, 2, 3):
        assert poll(services, feed_id) == "failed"
        feed = services.store.feeds.get(feed_id)
        assert feed.failures == failures and feed.last_error.startswith(f"{reason}: ")
        assert feed.last_success_at is None and feed.last_polled_at == feed.last_error_at
        delay = services.store.feeds.current_slot(feed_id) / 1000 - time.time()
        assert delay == pytest.approx(30 * 2**failures, abs=5)
    feed_server.serve("/rss/", ghost_rss([item(1)]))
    assert poll(services, feed_id) == "primed"  # it never worked before: this is its first read
    feed = services.store.feeds.get(feed_id)
    assert feed.failures == 0 and feed.last_success_at is not None and feed.polls["polls_failed"] == 3
    assert services.store.feeds.current_slot(feed_id) / 1000 == pytest.approx(time.time() + 30, abs=5)


def test_back_off_is_capped_and_honours_retry_after(services, feed_server):
    assert feeds.next_delay(120, 0) == 120
    assert feeds.next_delay(120, 1) == 240
    assert feeds.next_delay(120, 10) == 3600
    assert feeds.next_delay(7200, 3) == 7200
    assert feeds.next_delay(10, 1, retry_after=900) == 900
    assert feeds.next_delay(10, 1, retry_after=86400) == 3600
    feed_server.serve("/rss/", "busy", status=503, headers={"Retry-After": "1200"})
    feed_id = add(services, feed_server, "/rss/", every=10)
    poll(services, feed_id)
    assert services.store.feeds.current_slot(feed_id) / 1000 == pytest.approx(time.time() + 1200, abs=5)


def test_a_stale_or_busy_poll_does_nothing(services, feed_server):
    feed_id = add(services, feed_server, "/rss/", ghost_rss([item(1)]))
    slot = services.store.feeds.current_slot(feed_id)
    assert services.store.feeds.claim(feed_id, slot, "another-worker", 60) == 1
    assert run_poll(services, feed_id, slot) == "busy"  # two workers never poll one feed at once
    services.store.feeds.release(feed_id, "another-worker")
    assert run_poll(services, feed_id, slot) == "primed"
    assert run_poll(services, feed_id, slot) == "stale"  # a duplicate of the job that just ran
    assert len(feed_server.hits_for("/rss/")) == 1
    assert services.store.feeds.current_slot(feed_id) != slot


def test_a_removed_feed_stops_polling_and_leaves_nothing(services, feed_server, redis_client):
    feed_id = add(services, feed_server, "/rss/", ghost_rss([item(1)]))
    slot = services.store.feeds.current_slot(feed_id)
    poll(services, feed_id)
    assert feeds.remove_feed(services, feed_id)
    assert run_poll(services, feed_id, services.store.feeds.current_slot(feed_id) or slot) == "stale"
    assert services.store.feeds.record_failure(feed_id, time.time(), "late") == 0  # never recreated
    assert redis_client.keys(keys.feed(feed_id) + "*") == []
    assert services.store.feeds.current_slot(feed_id) is None
    assert not feeds.remove_feed(services, feed_id)


def test_a_stalled_schedule_is_restarted_unless_a_poll_is_running(services, feed_server):
    first = add(services, feed_server, "/a", ghost_rss([]))
    second = add(services, feed_server, "/b", ghost_rss([]))
    for feed_id in (first, second):
        services.store.feeds.set_slot(feed_id, int((time.time() - 600) * 1000))
    services.store.feeds.claim(second, services.store.feeds.current_slot(second), "busy-worker", 60)
    assert feeds.reschedule_stalled(services) == [first]
    slot = services.store.feeds.current_slot(first)
    assert slot / 1000 == pytest.approx(time.time(), abs=5)
    assert (
        feeds.poll_job_id(first, slot)
        in Queue(services.settings.queue_name, connection=services.queue_connection).job_ids
    )
    assert feeds.reschedule_stalled(services) == []


def test_adding_the_same_url_twice_is_a_conflict(services, feed_server):
    add(services, feed_server, "/rss/", ghost_rss([]))
    with pytest.raises(Conflict):
        add(services, feed_server, "/rss/")


def test_remembered_entries_are_bounded(services, redis_client):
    store = services.store.feeds
    feed = store.create("https://publisher.example/feed", ["news"], {}, 120)
    now = time.time()
    store.remember_entries(feed.id_, {f"old-{n}": "d" for n in range(10)}, now - 8 * 86400)
    store.remember_entries(feed.id_, {f"cur-{n}": "d" for n in range(MAX_ENTRIES + 3)}, now)
    assert redis_client.zcard(keys.feed_seen(feed.id_)) == MAX_ENTRIES
    assert redis_client.hlen(keys.feed_titles(feed.id_)) == MAX_ENTRIES
    assert store.title_digests(feed.id_, ["old-1"]) == {}
    assert 0 < redis_client.ttl(keys.feed_seen(feed.id_)) <= 7 * 86400


def test_an_entry_without_an_image_gets_its_article_pages_sharing_image(services, feed_server):
    feed_id = add(services, feed_server, "/rss/", ghost_rss([]))
    poll(services, feed_id)
    feed_server.serve("/news/og/", '<html><head><meta property="og:image" content="/uploads/og.jpg"></head></html>',
                      content_type="text/html")  # fmt: skip
    with_page = item(1, image=None, link=feed_server.url("/news/og/"))
    no_page = item(2, image=None, link=feed_server.url("/news/missing/"))
    named = item(3, link=feed_server.url("/news/named/"))  # media:content names one: no page fetched
    feed_server.serve("/rss/", ghost_rss([with_page, no_page, named]))
    poll(services, feed_id)
    assert campaign_for(services, "story-1")["story"]["image"] == feed_server.url("/uploads/og.jpg")
    assert "image" not in campaign_for(services, "story-2")["story"]  # page gone, no <img> either
    assert campaign_for(services, "story-3")["story"]["image"] == "https://publisher.example/img/story-3.jpg"
    assert feed_server.hits_for("/news/named/") == []


def test_the_first_img_of_the_content_is_the_last_resort(services, feed_server):
    feed_id = add(services, feed_server, "/feed.json", json_feed([]))
    poll(services, feed_id)
    entry = item(1, image=None, summary='<p>Text <img src="https://cdn.example/inline.jpg"></p>')
    feed_server.serve("/feed.json", json_feed([entry]))
    poll(services, feed_id)
    assert campaign_for(services, "story-1")["story"]["image"] == "https://cdn.example/inline.jpg"


def test_article_pages_fetched_per_poll_are_limited(services, feed_server):
    feed_id = add(services, feed_server, "/rss/", ghost_rss([]))
    poll(services, feed_id)
    entries = [item(n, image=None, link=feed_server.url(f"/page-{n}")) for n in range(8)]
    feed_server.serve("/rss/", ghost_rss(entries))
    poll(services, feed_id)
    assert len([h for h in feed_server.hits if h.path.startswith("/page-")]) == PAGE_LOOKUPS
    assert len(services.store.campaigns.list_ids()) == 8

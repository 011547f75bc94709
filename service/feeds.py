"""Publishers' feeds as a story source: adding and removing them, and their poll schedule.

Shared by the operator API and the CLI; nothing here knows HTTP.

Scheduling uses RQ's own machinery, no loop of ours: each feed has one poll job at a time,
put on the queue with `enqueue_at` (the worker's scheduler, which `storypush worker` always
runs, moves it to the front of the queue when due), and each poll schedules the next one,
`every` seconds later or later still after failures (back-off). The job's slot (its due time)
is the feed's one live slot in Redis (`store.feeds`), and a poll runs only while its slot is
current and it holds the feed's lease, so a duplicated or retried job can neither poll a feed
twice at once nor fork its schedule. Should a schedule stall anyway (a worker killed at the
wrong moment, a Redis outage), the workers' maintenance pass starts it again
(`reschedule_stalled`).

Why not RQ's other tools: `rq.cron.CronScheduler` keeps a fixed list of jobs in one process's
memory (a feed added through the API would wait for a restart), runs as a process of its own,
and has no lock, so every worker host would poll every feed. `Repeat` fixes the number of runs
and their interval when the job is enqueued, so neither per-feed back-off nor a feed's
lifetime fits it.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping
from typing import Annotated, Any, Protocol

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from rq import Queue, Retry

from .errors import Conflict
from .feed_fetch import MAX_URL_LENGTH, FeedFetcher, FeedUrlPolicy
from .feed_polling import FeedPoll, PollResult
from .queueing import run_no_sooner_than
from .settings import Settings
from .store import Store
from .store.feed_store import Feed
from .validation import MAX_TOPICS, _check_topics

logger = logging.getLogger(__name__)

DEFAULT_EVERY = 120
MIN_EVERY = 10
MAX_EVERY = 86400
MAX_CATEGORIES = 200
# After failures a feed waits every × 2^failures, up to an hour (or `every` if that is longer).
BACKOFF_CAP = 3600
POLL_JOB = "workers.feeds.poll_feed"
# A fetch ends within about twice STORYPUSH_FEED_TIMEOUT (at most 120 s); publishing is quick.
POLL_TIMEOUT = 300
LEASE_SECONDS = POLL_TIMEOUT + 30
# A slot this far past due with nobody polling counts as stalled (a queued poll waits at most
# for a worker to finish its current job, well under this).
STALL_GRACE = 180
# Only infrastructure errors (Redis) make a poll job fail; a retry finds its slot current.
POLL_RETRY = Retry(max=3, interval=[5, 15, 30])
FAILURE_TTL = 86400


class Services(Protocol):
    """What feeds need from the process (the web app's state or a worker's runtime)."""

    settings: Settings

    @property
    def store(self) -> Store: ...

    @property
    def queue(self) -> Queue: ...


def parse_category_map(value: object) -> dict[str, str]:
    """`{"Category": "topic"}`, or the CLI's text form `"Animals=animals,TV and Film=tv-and-film"`."""
    if value is None:
        return {}
    if isinstance(value, str):
        pairs: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            name, sep, topic = item.rpartition("=")
            if not sep or not name.strip():
                raise ValueError(f"expects Category=topic pairs separated by commas, got {item!r}")
            pairs[name.strip()] = topic.strip()
        return pairs
    if isinstance(value, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return {k.strip(): v.strip() for k, v in value.items()}
    raise ValueError('must be an object of category name to topic id (or "Category=topic,...")')


class FeedSpec(BaseModel):
    """A feed to add, as the operator API and `storypush feeds add` take it."""

    model_config = ConfigDict(extra="ignore")
    url: Annotated[str, Field(min_length=1, max_length=MAX_URL_LENGTH)]
    topics: Annotated[list[Annotated[str, Field(max_length=32)]], Field(max_length=MAX_TOPICS)] = []
    category_map: dict[str, str] = {}
    every: Annotated[int, Field(ge=MIN_EVERY, le=MAX_EVERY, strict=True)] = DEFAULT_EVERY

    _topics = field_validator("topics")(_check_topics)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str, info: ValidationInfo) -> str:
        policy: FeedUrlPolicy | None = (info.context or {}).get("feed_policy")
        if policy is None:
            raise ValueError("no feed URL policy configured")
        problem = policy.problem(value.strip())
        if problem:
            raise ValueError(problem)
        return value.strip()

    @field_validator("category_map", mode="before")
    @classmethod
    def _category_map(cls, value: object, info: ValidationInfo) -> dict[str, str]:
        pairs = parse_category_map(value)
        if len(pairs) > MAX_CATEGORIES:
            raise ValueError(f"has more than {MAX_CATEGORIES} categories")
        known: frozenset[str] = (info.context or {}).get("topics", frozenset())
        for name, topic in pairs.items():
            if not name or len(name) > 200:
                raise ValueError("category names must be 1 to 200 characters")
            if topic not in known:
                raise ValueError(f"maps {name!r} to unknown topic {topic!r}")
        return pairs


def spec_context(settings: Settings, store: Store) -> dict[str, Any]:
    """The validation context of `FeedSpec`: known topics and the feed URL policy."""
    return {"topics": store.topic_ids, "feed_policy": FeedUrlPolicy(settings.feeds.trusted_hosts)}


def add_feed(services: Services, spec: FeedSpec) -> Feed:
    """Create the feed and poll it now (that first poll records its entries, sends nothing).

    Raises:
        Conflict: a feed with this URL exists already.
    """
    store = services.store
    feed = store.feeds.create(spec.url, spec.topics, spec.category_map, spec.every)
    if feed is None:
        raise Conflict(f"feed {store.feeds.id_for_url(spec.url)} already polls this URL", field="url")
    schedule_poll(services, feed.id_, time.time())
    logger.info("feed %s added (every %d s)", feed.id_, feed.every, extra={"feed_id": feed.id_})
    return store.feeds.get(feed.id_) or feed


def remove_feed(services: Services, feed_id: str) -> bool:
    """Forget the feed; its queued poll, if any, finds no slot and does nothing."""
    removed = services.store.feeds.delete(feed_id)
    if removed:
        logger.info("feed %s removed", feed_id, extra={"feed_id": feed_id})
    return removed


# -- the schedule ---------------------------------------------------------------------------


def poll_job_id(feed_id: str, slot: int) -> str:
    return f"sp-feed-{feed_id}-{slot}"


def schedule_poll(services: Services, feed_id: str, at: float) -> int | None:
    """Make a poll at `at` the feed's one live poll; returns its slot (None: feed removed)."""
    slot = int(at * 1000)
    if not services.store.feeds.set_slot(feed_id, slot):
        return None
    options = {
        "job_id": poll_job_id(feed_id, slot),
        "at_front": True,  # a poll is tiny; it should not wait behind a large campaign's batches
        "job_timeout": POLL_TIMEOUT,
        "result_ttl": 0,
        "failure_ttl": FAILURE_TTL,
        "retry": POLL_RETRY,
        "description": f"poll feed {feed_id}",
    }
    if at <= time.time():
        services.queue.enqueue(POLL_JOB, feed_id, slot, **options)
    else:
        # Never before its time, so never sooner than `every` after the last poll.
        services.queue.enqueue_at(run_no_sooner_than(at), POLL_JOB, feed_id, slot, **options)
    return slot


def next_delay(every: int, failures: int, retry_after: float | None = None) -> float:
    """Seconds to the next poll: `every`, or exponential back-off after consecutive failures
    (honouring a longer Retry-After), never longer than an hour or `every`, whichever is more."""
    if failures <= 0:
        return float(every)
    cap = max(every, BACKOFF_CAP)
    delay = min(every * 2 ** min(failures, 20), cap)
    if retry_after:
        delay = max(delay, min(retry_after, cap))
    return float(delay)


def run_poll(services: Services, feed_id: str, slot: int) -> str:
    """The poll job's body: claim the slot, poll, schedule the next poll, release.

    Returns what happened (RQ keeps it only for failed jobs; tests read it).
    """
    feeds = services.store.feeds
    token = secrets.token_hex(8)
    claimed = feeds.claim(feed_id, slot, token, LEASE_SECONDS)
    if claimed != 1:
        return "stale" if claimed == 0 else "busy"
    result: PollResult | None = None
    feed = feeds.get(feed_id)
    try:
        if feed is None:
            return "removed"
        now = time.time()
        try:
            fetcher = FeedFetcher(services.settings.feeds)
            result = FeedPoll(services.store, services.queue, services.settings, feed, fetcher, now).run()
        except redis.RedisError:
            raise  # RQ retries the job; its slot is still current
        except Exception as exc:  # a feed that trips a bug must still show as failing and keep polling
            logger.exception("feed %s poll crashed", feed_id, extra={"feed_id": feed_id})
            failures = feeds.record_failure(feed_id, now, f"internal: {type(exc).__name__} (see worker log)")
            result = PollResult("failed", failures=failures)
        return result.outcome
    finally:
        if feed is not None:
            failures = result.failures if result else feed.failures
            retry_after = result.problem.retry_after if result and result.problem else None
            schedule_poll(services, feed_id, time.time() + next_delay(feed.every, failures, retry_after))
        feeds.release(feed_id, token)


def reschedule_stalled(services: Services) -> list[str]:
    """Start again the schedule of every feed whose poll is overdue with nobody polling it."""
    stalled = services.store.feeds.stalled(time.time() - STALL_GRACE)
    for feed_id in stalled:
        schedule_poll(services, feed_id, time.time())
        logger.warning("feed %s: poll schedule had stalled; polling now", feed_id, extra={"feed_id": feed_id})
    return stalled

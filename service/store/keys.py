"""Every Redis key storypush writes, spelled here and nowhere else, behind one prefix."""

from __future__ import annotations

from datetime import date

PREFIX = "sp:"

# Endpoint digests are spread over this many small hashes so each stays in
# Redis's compact listpack encoding (default limit 128 entries): ~20 bytes an
# entry instead of ~70 in one big hashtable, up to ~500k subscribers.
ENDPOINT_BUCKETS = 4096

SUBSCRIPTION_SEQ = PREFIX + "sub:seq"
SUBSCRIPTION_COUNT = PREFIX + "sub:count"
SUBSCRIPTION_PREFIX = PREFIX + "s:"
TOPIC_PREFIX = PREFIX + "t:"
FAILURE_PREFIX = PREFIX + "sfail:"
PROMPT_FUNNEL = PREFIX + "prompt:funnel"
CAMPAIGN_LIST = PREFIX + "campaigns"
STORY_CAMPAIGN = PREFIX + "story:campaign"


def subscription(id_: int) -> str:
    return f"{SUBSCRIPTION_PREFIX}{id_}"


def topic(topic_id: str) -> str:
    """Bitmap of subscription ids following `topic_id`."""
    return f"{TOPIC_PREFIX}{topic_id}"


def endpoint_bucket(digest: bytes) -> tuple[str, bytes]:
    """The hash holding `digest`'s id, and the field inside it."""
    bucket = int.from_bytes(digest[:2], "big") % ENDPOINT_BUCKETS
    return f"{PREFIX}ep:{bucket:03x}", digest[2:]


def failures(id_: int) -> str:
    """Permanent-failure streak of one subscription (first time, count)."""
    return f"{FAILURE_PREFIX}{id_}"


def frequency_cap(day: date) -> str:
    """One byte per subscription id: story pushes counted on `day`, the subscriber's own date."""
    return f"{PREFIX}fcap:{day:%Y%m%d}"


def rate_limit(scope: str, subject: str, window: int) -> str:
    """Hits of `subject` (a client, or "all" for a global limit) on `scope` in one window."""
    return f"{PREFIX}rl:{scope}:{subject}:{window}"


def campaign(campaign_id: str) -> str:
    return f"{PREFIX}c:{campaign_id}"


def campaign_errors(campaign_id: str) -> str:
    return f"{PREFIX}c:{campaign_id}:errors"


def campaign_audience(campaign_id: str) -> str:
    return f"{PREFIX}c:{campaign_id}:audience"


def campaign_resolved(campaign_id: str) -> str:
    """Bitmap: bit `id` set once subscription `id` is finished for this campaign
    (2xx, expired or failed for good), right after the answer, so a re-run skips it."""
    return f"{PREFIX}c:{campaign_id}:resolved"


def campaign_receipts(campaign_id: str, kind: str) -> str:
    """Bitmap per receipt kind (delivered/clicked/dismissed): each counts once."""
    return f"{PREFIX}c:{campaign_id}:r:{kind}"


def webhook_id(message_id: str) -> str:
    return f"{PREFIX}wh:{message_id}"


def campaign_units_planned(campaign_id: str) -> str:
    """Set of unit ids counted into `pending` (each counted once, even if re-planned)."""
    return f"{PREFIX}c:{campaign_id}:planned"


def campaign_units_done(campaign_id: str) -> str:
    """Set of batch/retry unit ids that have finished (each finishes once)."""
    return f"{PREFIX}c:{campaign_id}:units"


def campaign_lease(campaign_id: str, unit_id: str) -> str:
    """Held by the one worker sending a unit, so two workers never race on it."""
    return f"{PREFIX}c:{campaign_id}:lease:{unit_id}"


# -- metrics: one hash per metric family, shared by every web and worker process --

METRICS_PUSHES = PREFIX + "metrics:pushes"
METRICS_PUSH_DURATION = PREFIX + "metrics:push_duration"
METRICS_CAMPAIGN_DURATION = PREFIX + "metrics:campaign_duration"
METRICS_WEBHOOKS = PREFIX + "metrics:webhooks"
METRICS_LANE_EVENTS = PREFIX + "metrics:lane_events"
# Hash: worker name -> JSON report of its per-origin lanes, refreshed while it sends.
LANE_REPORTS = PREFIX + "lanes"


def metrics_rate(minute: int) -> str:
    """Pushes answered during one minute (Unix time // 60); expires after the chart's hour."""
    return f"{PREFIX}metrics:rate:{minute}"


def campaign_todo(campaign_id: str) -> str:
    """List of first-attempt batch ranges ("start:end") a busy worker may take on early."""
    return f"{PREFIX}c:{campaign_id}:todo"


# -- feeds: publishers' RSS / Atom / JSON feeds polled for new stories --

FEEDS = PREFIX + "feeds"  # sorted set: feed id by creation time
FEED_URLS = PREFIX + "feeds:urls"  # hash: feed URL -> feed id (one feed per URL)
# Sorted set: feed id -> the slot (Unix ms) of its one live poll job. A poll job runs only
# while its slot is the feed's current one, so a duplicated job can never fork the schedule.
FEEDS_DUE = PREFIX + "feeds:due"


def feed(feed_id: str) -> str:
    """Hash: the feed's settings, HTTP validators and poll status."""
    return f"{PREFIX}feed:{feed_id}"


def feed_titles(feed_id: str) -> str:
    """Hash: story id -> digest of the title last seen, for every entry the feed remembers."""
    return f"{PREFIX}feed:{feed_id}:titles"


def feed_seen(feed_id: str) -> str:
    """Sorted set: story id -> when the entry was last in the feed (pruned after a week away)."""
    return f"{PREFIX}feed:{feed_id}:seen"


def feed_lease(feed_id: str) -> str:
    """Held by the one worker polling the feed, so two workers never poll it at once."""
    return f"{PREFIX}feed:{feed_id}:lease"

"""One poll of one feed: fetch, read, and turn what is new into stories through the webhook's path.

- The first successful read of a feed only records its entries: adding a feed never floods
  subscribers with its back catalogue.
- Afterwards an entry not seen before becomes `publishing.publish` (one campaign per story id,
  whichever of feed, webhook or `storypush publish` comes first), unless it was published
  (or updated) longer ago than `STORYPUSH_FEED_MAX_AGE`.
- A new entry for which the feed names no image gets the one its article page names for
  sharing (`og:image`), fetched as safely as the feed, for at most `PAGE_LOOKUPS` entries a poll.
- An entry whose title changed while its campaign has not finished becomes `publishing.update`.
- Problems of the feed (network, HTTP, size, time, unreadable document) are recorded on the
  feed and logged; they never raise, so the poll's schedule carries on with back-off.

Entries are published before they are remembered: a worker dying in between makes the next
poll publish them again, which the one-campaign-per-story rule turns into a no-op.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from rq import Queue

from . import publishing
from .errors import FeedProblem
from .feed_fetch import FeedFetcher
from .feed_parsing import FeedEntry, ParsedFeed, parse_feed, share_image
from .feed_stories import EntrySkipped, TopicMatcher, entry_story, story_id_for, title_digest
from .settings import Settings
from .store import Store
from .store.campaign_store import FINAL_STATES
from .store.feed_store import Feed

logger = logging.getLogger(__name__)

# Article pages fetched per poll for their sharing image; only the <head> matters.
PAGE_LOOKUPS = 5
PAGE_BYTES = 512 * 1024


@dataclass
class PollResult:
    """What one poll did; `problem` is set when it failed."""

    outcome: str  # primed, ok, not_modified, failed
    new: int = 0
    published: int = 0
    updated: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    problem: FeedProblem | None = None
    failures: int = 0


def _read(fetcher: FeedFetcher, feed: Feed) -> tuple[ParsedFeed | None, tuple[str | None, str | None]]:
    """(parsed document, or None when unchanged (304); the response's validators)."""
    response = fetcher.fetch(feed.url, feed.etag, feed.last_modified)
    validators = (response.etag or feed.etag, response.last_modified or feed.last_modified)
    if response.not_modified:
        return None, validators
    return parse_feed(response.body, response.content_type, response.url), validators


class FeedPoll:
    """Everything one poll needs, so the steps read as a story."""

    def __init__(self, store: Store, queue: Queue, settings: Settings, feed: Feed, fetcher: FeedFetcher, now: float):
        self.store = store
        self.fetcher = fetcher
        self.page_lookups = PAGE_LOOKUPS
        self.queue = queue
        self.settings = settings
        self.feed = feed
        self.now = now
        self.matcher = TopicMatcher(settings.topics, feed.category_map, feed.topics)
        self.log_extra = {"feed_id": feed.id_}

    def run(self) -> PollResult:
        try:
            parsed, validators = _read(self.fetcher, self.feed)
        except FeedProblem as problem:
            return self._failed(problem)
        if parsed is None:
            self.store.feeds.record_success(self.feed.id_, self.now, not_modified=True, validators=validators)
            logger.debug("feed %s unchanged (304)", self.feed.id_, extra=self.log_extra)
            return PollResult("not_modified")
        if parsed.warning:
            logger.warning("feed %s: %s", self.feed.id_, parsed.warning, extra=self.log_extra)
        digests = {story_id_for(e.key): title_digest(e.title) for e in parsed.entries}
        known = self.store.feeds.title_digests(self.feed.id_, list(digests))
        result = self._take(parsed.entries, known) if self.feed.primed else PollResult("primed")
        result.new = len(digests.keys() - known.keys())
        self.store.feeds.remember_entries(self.feed.id_, digests, self.now)
        self.store.feeds.record_success(
            self.feed.id_,
            self.now,
            validators=validators,
            title=parsed.title,
            new_entries=result.new,
            stories=result.published,
        )
        self._log(result, len(parsed.entries))
        return result

    def _failed(self, problem: FeedProblem) -> PollResult:
        failures = self.store.feeds.record_failure(self.feed.id_, self.now, f"{problem.reason}: {problem.message}")
        logger.warning(
            "feed %s poll failed (%d in a row): %s: %s",
            self.feed.id_,
            failures,
            problem.reason,
            problem.message,
            extra={**self.log_extra, "reason": problem.reason, "count": failures},
        )
        return PollResult("failed", problem=problem, failures=failures)

    def _take(self, entries: tuple[FeedEntry, ...], remembered: dict[str, str]) -> PollResult:
        """Publish the new entries (oldest first) and update the retitled ones."""
        result = PollResult("ok")
        known = dict(remembered)
        for entry in sorted(entries, key=lambda e: e.published or self.now):
            story_id = story_id_for(entry.key)
            previous = known.get(story_id)
            if previous is None:
                self._publish(entry, result)
            elif previous != title_digest(entry.title):
                self._update(story_id, entry, result)
            known[story_id] = title_digest(entry.title)  # a guid twice in one document counts once
        return result

    def _story(self, entry: FeedEntry, result: PollResult) -> dict[str, Any] | None:
        """The entry as a story, or None (counted by reason) if it cannot be one."""
        try:
            return entry_story(entry, self.matcher, self.store.topic_ids)
        except EntrySkipped as why:
            result.skipped[str(why)] += 1
            return None

    def _publish(self, entry: FeedEntry, result: PollResult) -> None:
        if entry.published is not None and entry.published < self.now - self.settings.feeds.max_age:
            result.skipped["older than STORYPUSH_FEED_MAX_AGE"] += 1
            return
        if not entry.image and entry.link:
            entry = replace(entry, image=self._share_image(entry.link))
        story = self._story(entry, result)
        if story is None:
            return
        published = publishing.publish(self.store, self.queue, story)
        if published.created:
            result.published += 1
            logger.info(
                "feed %s: story %s published as campaign %s",
                self.feed.id_,
                story["id"],
                published.campaign_id,
                extra={**self.log_extra, "campaign_id": published.campaign_id},
            )

    def _share_image(self, link: str) -> str | None:
        """The article page's og:image, if the page can be fetched (a failure only costs the image)."""
        if self.page_lookups <= 0:
            return None
        self.page_lookups -= 1
        try:
            page = self.fetcher.fetch(link, max_bytes=PAGE_BYTES)
        except FeedProblem as problem:
            logger.info("feed %s: no sharing image from %s (%s)", self.feed.id_, urlsplit(link).hostname,
                        problem.reason, extra={**self.log_extra, "reason": problem.reason})  # fmt: skip
            return None
        return share_image(page.body, page.url)

    def _update(self, story_id: str, entry: FeedEntry, result: PollResult) -> None:
        campaign_id = self.store.campaigns.id_for_story(story_id)
        if campaign_id is None or self.store.campaigns.state(campaign_id) in FINAL_STATES:
            return
        story = self._story(entry, result)
        if story is None:
            return
        publishing.update(self.store, story)
        result.updated += 1
        logger.info(
            "feed %s: story %s retitled; campaign %s updated",
            self.feed.id_,
            story_id,
            campaign_id,
            extra={**self.log_extra, "campaign_id": campaign_id},
        )

    def _log(self, result: PollResult, entries: int) -> None:
        for reason, count in result.skipped.items():
            logger.info(
                "feed %s: %d new entries not sent: %s",
                self.feed.id_,
                count,
                reason,
                extra={**self.log_extra, "reason": reason, "count": count},
            )
        if result.outcome == "primed":
            logger.info(
                "feed %s: first read, %d entries recorded, none sent",
                self.feed.id_,
                entries,
                extra={**self.log_extra, "count": entries},
            )
        elif result.new or result.updated:
            logger.info(
                "feed %s: %d new entries, %d published, %d updated",
                self.feed.id_,
                result.new,
                result.published,
                result.updated,
                extra={**self.log_extra, "count": result.new},
            )

"""Prometheus `/metrics`.

Counters come from Redis (`store.metrics`), queue and subscriber gauges are
read at scrape time, so the answer is the same from any gunicorn worker on any
machine and no process keeps state of its own. The queue gauges use the same
reading of RQ's registries as the operator API (`service.queueing`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import redis
from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from rq import Worker

from .errors import Unauthorized
from .http import bearer_token, token_matches
from .queueing import queue_counts, queue_names
from .state import AppState, current_state
from .store import Store
from .store.metrics_store import LANE_EVENTS, LANE_STATES

bp = Blueprint("metrics", __name__)


def _histogram(name: str, documentation: str, data: Any) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, documentation, buckets=data.buckets, sum_value=data.sum)


class RedisCollector:
    """Builds every storypush metric family from Redis at scrape time."""

    def __init__(self, store: Store, queue_connection: redis.Redis, queue_name: str):
        self.store = store
        self.queue_connection = queue_connection
        self.queue_name = queue_name

    def collect(self) -> Iterator[Metric]:
        metrics = self.store.metrics
        pushes = CounterMetricFamily(
            "storypush_pushes", "Push requests by result and push-service origin.", labels=["result", "origin"]
        )
        for (result, origin), count in sorted(metrics.pushes().items()):
            pushes.add_metric([result, origin], count)
        yield pushes
        yield _histogram(
            "storypush_push_duration_seconds", "Push request to answer, per push.", metrics.push_durations()
        )
        yield _histogram(
            "storypush_campaign_duration_seconds",
            "Campaign start to done, per finished campaign.",
            metrics.campaign_durations(),
        )
        yield from self._lanes()
        webhooks = CounterMetricFamily("storypush_webhook_calls", "CMS webhook calls by outcome.", labels=["outcome"])
        for outcome, count in metrics.webhook_calls().items():
            webhooks.add_metric([outcome], count)
        yield webhooks
        yield from self._feeds()
        yield from self._gauges()

    def _lanes(self) -> Iterator[Metric]:
        rows = self.store.metrics.lane_rows()
        events = CounterMetricFamily(
            "storypush_lane_events",
            "Per push-service origin: throttle answers (429/503/406), throttles of one device "
            "(device_throttled), unreachable requests (timeouts, refused connects, resets) and circuits opened.",
            labels=["origin", "event"],
        )
        states = GaugeMetricFamily(
            "storypush_lane_state", "Worker lanes per push-service origin and state.", labels=["origin", "state"]
        )
        gauges = {
            name: GaugeMetricFamily(f"storypush_lane_{name}", text, labels=["origin"])
            for name, text in (
                ("limit", "Sum of the workers' adaptive in-flight limits per origin."),
                ("in_flight", "Requests in flight per origin."),
                ("queued", "Pushes waiting for a slot per origin."),
            )
        }
        for row in rows:
            for event in LANE_EVENTS:
                events.add_metric([row["origin"], event], row[event])
            for state in LANE_STATES:
                states.add_metric([row["origin"], state], row["workers"].get(state, 0))
            for name, gauge in gauges.items():
                gauge.add_metric([row["origin"]], row[name])
        yield events
        yield states
        yield from gauges.values()

    def _feeds(self) -> Iterator[Metric]:
        """Per feed (label `feed`, its id): polls by result, consecutive failures, last success."""
        polls = CounterMetricFamily("storypush_feed_polls", "Feed polls by result.", labels=["feed", "result"])
        entries = CounterMetricFamily("storypush_feed_entries_seen", "Distinct feed entries seen.", labels=["feed"])
        stories = CounterMetricFamily("storypush_feed_stories", "Campaigns a feed started.", labels=["feed"])
        failures = GaugeMetricFamily("storypush_feed_failures", "Consecutive failed polls of a feed.", labels=["feed"])
        last_success = GaugeMetricFamily(
            "storypush_feed_last_success_timestamp_seconds", "When a feed was last read.", labels=["feed"]
        )
        for feed in self.store.feeds.list():
            for name, count in feed.polls.items():
                polls.add_metric([feed.id_, name.removeprefix("polls_")], count)
            entries.add_metric([feed.id_], feed.entries_seen)
            stories.add_metric([feed.id_], feed.stories)
            failures.add_metric([feed.id_], feed.failures)
            if feed.last_success_at is not None:
                last_success.add_metric([feed.id_], feed.last_success_at)
        yield from (polls, entries, stories, failures, last_success)

    def _gauges(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("storypush_queue_jobs", "RQ jobs per queue and state.", labels=["queue", "state"])
        for name in queue_names(self.queue_connection, self.queue_name):
            for state, count in queue_counts(self.queue_connection, name).items():
                jobs.add_metric([name, state], count)
        yield jobs
        yield GaugeMetricFamily(
            "storypush_workers", "Registered RQ workers.", value=Worker.count(connection=self.queue_connection)
        )
        subscriptions = self.store.subscriptions
        by_topic = GaugeMetricFamily("storypush_subscribers", "Subscribers following a topic.", labels=["topic"])
        for topic, count in subscriptions.count_by_topic().items():
            by_topic.add_metric([topic], count)
        yield by_topic
        yield GaugeMetricFamily("storypush_subscribers_total", "Subscribers.", value=subscriptions.count())
        prompt = CounterMetricFamily("storypush_prompt_events", "Soft-prompt funnel events.", labels=["type"])
        for kind, count in self.store.prompt_funnel().items():
            prompt.add_metric([kind], count)
        yield prompt


def render_metrics(state: AppState) -> bytes:
    """The Prometheus text exposition, from a registry built for this scrape only."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(state.store, state.queue_connection, state.settings.queue_name))  # type: ignore[arg-type]
    return generate_latest(registry)


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text format. Open by default (monitoring scrapes it), unless STORYPUSH_METRICS_TOKEN
    is set: then only with that bearer token (Prometheus's `authorization` scrape setting)."""
    state = current_state()
    expected = state.settings.metrics_token
    if expected is not None and not token_matches(bearer_token(), expected):
        raise Unauthorized("metrics need the bearer token STORYPUSH_METRICS_TOKEN")
    return Response(render_metrics(state), content_type=CONTENT_TYPE_LATEST)

"""What operators observe: RQ's registries and workers, and Prometheus `/metrics`.

Counters come from Redis (`store.metrics`), queue and subscriber gauges are
read at scrape time, so the answer is the same from any gunicorn worker on any
machine and no process keeps state of its own. The RQ helpers here are also what
the operator API shows: one reading of the queues for both.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import redis
from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from rq import Queue, Worker
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.results import Result

from .errors import NotFound, Unauthorized
from .http import bearer_token, same_secret
from .state import AppState, current_state
from .store import Store

bp = Blueprint("metrics", __name__)

QUEUE_STATES = ("queued", "started", "scheduled", "deferred", "failed")
# Failed jobs shown on the dashboard; older ones stay in RQ until their failure_ttl.
FAILED_JOBS_SHOWN = 100


# -- RQ registries -----------------------------------------------------------------


def queue_names(connection: redis.Redis, configured: str) -> list[str]:
    """Our queue plus any other RQ queue on this Redis (an operator may run more)."""
    names = {q.name for q in Queue.all(connection=connection)} | {configured}
    return sorted(names)


def queue_counts(connection: redis.Redis, name: str) -> dict[str, int]:
    """Jobs per state of one queue, from RQ's own registries."""
    queue = Queue(name, connection=connection)
    return {
        "queued": queue.count,
        "started": queue.started_job_registry.count,
        "scheduled": queue.scheduled_job_registry.count,
        "deferred": queue.deferred_job_registry.count,
        "failed": queue.failed_job_registry.count,
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def worker_rows(connection: redis.Redis) -> list[dict[str, Any]]:
    """Every registered RQ worker: name, state, current job, last heartbeat."""
    rows = []
    for worker in Worker.all(connection=connection):
        rows.append(
            {
                "name": worker.name,
                "state": str(getattr(worker.get_state(), "value", worker.get_state())),
                "current_job": worker.get_current_job_id(),
                "last_heartbeat": _iso(worker.last_heartbeat),
                "queues": worker.queue_names(),
                "successful_jobs": worker.successful_job_count,
                "failed_jobs": worker.failed_job_count,
            }
        )
    return sorted(rows, key=lambda row: row["name"])


def _error_line(job: Job) -> str | None:
    """The exception's last line (`Type: message`): enough to decide on a retry."""
    result = job.latest_result()
    text = result.exc_string if result is not None and result.type == Result.Type.FAILED else None
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else None


def failed_jobs(connection: redis.Redis, names: list[str], limit: int = FAILED_JOBS_SHOWN) -> list[dict[str, Any]]:
    """Failed jobs, newest first, with their error."""
    rows = []
    for name in names:
        registry = FailedJobRegistry(name, connection=connection)
        ids = registry.get_job_ids(0, limit - 1, desc=True)
        for job in Job.fetch_many(ids, connection=connection):
            if job is None:
                continue
            rows.append(
                {
                    "id": job.id,
                    "queue": name,
                    "description": job.description,
                    "function": job.func_name,
                    "error": _error_line(job),
                    "enqueued_at": _iso(job.enqueued_at),
                    "failed_at": _iso(job.ended_at),
                }
            )
    rows.sort(key=lambda row: row["failed_at"] or "", reverse=True)
    return rows[:limit]


def _failed_registry_holding(connection: redis.Redis, names: list[str], job_id: str) -> FailedJobRegistry:
    for name in names:
        registry = FailedJobRegistry(name, connection=connection)
        if job_id in registry:
            return registry
    raise NotFound(f"no failed job {job_id}", field="job_id")


def retry_failed_job(connection: redis.Redis, names: list[str], job_id: str) -> None:
    """Put a failed job back on its queue (RQ's own requeue)."""
    registry = _failed_registry_holding(connection, names, job_id)
    try:
        registry.requeue(job_id)
    except (InvalidJobOperation, NoSuchJobError):
        raise NotFound(f"no failed job {job_id}", field="job_id") from None


def delete_failed_job(connection: redis.Redis, names: list[str], job_id: str) -> None:
    """Forget a failed job (and remove it from the registry)."""
    _failed_registry_holding(connection, names, job_id)
    try:
        Job.fetch(job_id, connection=connection).delete()
    except NoSuchJobError:
        raise NotFound(f"no failed job {job_id}", field="job_id") from None


# -- Prometheus ----------------------------------------------------------------------


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
        webhooks = CounterMetricFamily("storypush_webhook_calls", "CMS webhook calls by outcome.", labels=["outcome"])
        for outcome, count in metrics.webhook_calls().items():
            webhooks.add_metric([outcome], count)
        yield webhooks
        yield from self._feeds()
        yield from self._gauges()

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
    """Prometheus text format. Open, as CONTRACT.md has it, unless STORYPUSH_METRICS_TOKEN
    is set: then only with that bearer token (Prometheus's `authorization` scrape setting)."""
    state = current_state()
    expected = state.settings.metrics_token
    if expected is not None and not same_secret(bearer_token() or "", expected):
        raise Unauthorized("metrics need the bearer token STORYPUSH_METRICS_TOKEN")
    return Response(render_metrics(state), content_type=CONTENT_TYPE_LATEST)

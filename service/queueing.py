"""storypush's RQ queues: the policy every job runs under, the campaign job the web process
enqueues, and what operators see and do with the queues (counts, workers, failed jobs).

The web process imports this, the workers import it too (`workers.queueing` builds the batch
jobs on the same policy), and it imports nothing from `workers`: jobs are named by their
dotted path, the way RQ itself refers to them.

Every job gets RQ's own `Retry` (without it RQ marks a job abandoned by a killed worker as
failed, and its unsent pushes are lost) and a `failure_ttl` shorter than RQ's one-year default.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import redis
from rq import Queue, Retry, Worker
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.results import Result

from .errors import NotFound

FAILURE_TTL = 7 * 86400
RESULT_TTL = 3600
# Re-runs after a crash or an abandoned job: quick, since sent markers make them safe.
JOB_RETRY = Retry(max=5, interval=[5, 15, 30, 60, 120])

START_CAMPAIGN = "workers.jobs.start_campaign"
CAMPAIGN_TIMEOUT = 60

# Failed jobs shown on the dashboard; older ones stay in RQ until their failure_ttl.
FAILED_JOBS_SHOWN = 100


# -- putting work on the queue -----------------------------------------------------------


def campaign_job_id(campaign_id: str) -> str:
    return f"sp-campaign-{campaign_id}"


def run_no_sooner_than(at: float) -> datetime:
    """The time to hand RQ's `enqueue_at` for a job that must not run before `at`: RQ keeps
    a scheduled time in whole seconds, cut down, so it is rounded up here (else the job
    could start up to a second early)."""
    return datetime.fromtimestamp(math.ceil(at), UTC)


def enqueue_campaign(queue: Queue, campaign_id: str, send_at: float | None = None) -> None:
    """Start the campaign now, or at `send_at` with RQ's own scheduler."""
    options = {
        "job_id": campaign_job_id(campaign_id),
        "retry": JOB_RETRY,
        "job_timeout": CAMPAIGN_TIMEOUT,
        "failure_ttl": FAILURE_TTL,
        "result_ttl": RESULT_TTL,
        "description": f"campaign {campaign_id}",
    }
    if send_at is not None:
        queue.enqueue_at(run_no_sooner_than(send_at), START_CAMPAIGN, campaign_id, **options)
    else:
        queue.enqueue(START_CAMPAIGN, campaign_id, **options)


# -- reading the queues (RQ's own registries) --------------------------------------------


def queue_names(connection: redis.Redis, configured: str) -> list[str]:
    """Our queue plus any other RQ queue on this Redis (an operator may run more)."""
    names = {q.name for q in Queue.all(connection=connection)} | {configured}
    return sorted(names)


def queue_counts(connection: redis.Redis, name: str) -> dict[str, int]:
    """Jobs per state of one queue."""
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


# -- operating on failed jobs ------------------------------------------------------------


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

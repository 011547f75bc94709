"""How a campaign's batches go on RQ: deterministic job ids (a re-enqueue replaces, never
duplicates), a `job_timeout` sized for the worst case, and delayed retry jobs.

The policy shared with the campaign job (retry, TTLs) lives in `service.queueing`.
"""

from __future__ import annotations

from datetime import timedelta

from rq import Queue

from service.queueing import FAILURE_TTL, JOB_RETRY, RESULT_TTL

# A batch stops starting new pushes after this long and hands the rest to a
# retry job, so it always ends inside its job timeout.
BATCH_DEADLINE = 25
# Worst case inside the deadline: requests started just before 25 s time out
# after 5 s connect + 10 s read; 45 s leaves slack. A SimpleWorker's job counts
# as abandoned job_timeout + 60 s after it started, so this also bounds how
# soon another worker takes over a killed worker's batch (see runner.py).
BATCH_TIMEOUT = 45

SEND_BATCH = "workers.jobs.send_batch"


def unit_id(start: int, attempt: int) -> str:
    return str(start) if attempt == 1 else f"{start}:r{attempt}"


def batch_job_id(campaign_id: str, start: int, attempt: int) -> str:
    return f"sp-batch-{campaign_id}-{unit_id(start, attempt).replace(':', '-')}"


def batch_job_data(
    campaign_id: str,
    start: int,
    end: int,
    attempt: int = 1,
    only: list[int] | None = None,
    used: list[int] | None = None,
):
    args = (campaign_id, start, end, attempt, only) if used is None else (campaign_id, start, end, attempt, only, used)
    return Queue.prepare_data(
        SEND_BATCH,
        args=args,
        job_id=batch_job_id(campaign_id, start, attempt),
        retry=JOB_RETRY,
        timeout=BATCH_TIMEOUT,
        failure_ttl=FAILURE_TTL,
        result_ttl=RESULT_TTL,
        description=f"campaign {campaign_id} batch {start}-{end} attempt {attempt}",
    )


def enqueue_batches(queue: Queue, campaign_id: str, ranges: list[tuple[int, int]]) -> None:
    with queue.connection.pipeline() as pipe:
        queue.enqueue_many([batch_job_data(campaign_id, s, e) for s, e in ranges], pipeline=pipe)
        pipe.execute()


def enqueue_retry(
    queue: Queue,
    campaign_id: str,
    start: int,
    end: int,
    attempt: int,
    only: list[int],
    delay: float,
    used: list[int],
) -> None:
    """A delayed job carrying only the ids to retry (and the attempts each has used);
    the rest of the batch is never touched again."""
    data = batch_job_data(campaign_id, start, end, attempt, only, used)
    queue.enqueue_in(
        timedelta(seconds=max(1.0, delay)),
        data.func,
        *data.args,
        job_id=data.job_id,
        retry=data.retry,
        job_timeout=data.timeout,
        failure_ttl=data.failure_ttl,
        result_ttl=data.result_ttl,
        description=data.description,
    )

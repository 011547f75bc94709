"""Start RQ workers configured for storypush (scheduler on, fast recovery of killed jobs)."""

from __future__ import annotations

import gc

import redis
from rq import Queue, SimpleWorker
from rq.worker_pool import WorkerPool

from service.logs import configure_logging
from service.settings import Settings
from service.store import WORKER_PATIENCE, connect, resolve_redis_urls

from .feeds import reschedule_stalled_feeds

# Only a worker's maintenance pass hands a job abandoned by a SIGKILLed worker
# back to the queue, once the job's heartbeat lapsed (a SimpleWorker's: job
# timeout + 60 s = 105 s for a batch). Maintenance runs every
# maintenance_interval, but an idle worker checks only between blocking
# dequeues, which last worker_ttl - 15 s (RQ's defaults: 10 min and 405 s).
# 30 s each bounds a killed batch's takeover near 105 + 30 + 5 (retry interval)
# = 140 s.
MAINTENANCE_INTERVAL = 30
WORKER_TTL = 45
# A batch allocates a few short-lived objects per push; with CPython's default threshold
# (700) the collector ran every few pushes and took ~5 % of a sending worker's CPU
# (py-spy, `gc_collect_main`). Young collections 30× rarer cost a few MB at most.
GC_THRESHOLDS = (20_000, 20, 20)


def tune_gc() -> None:
    """Collect rarely, and never rescan what exists at start-up (modules, settings)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class StorypushWorker(SimpleWorker):
    """Runs jobs in the worker process itself (no fork per job), so the event loop
    and the kept-alive connections to push services live from one batch to the
    next instead of a TLS handshake per connection per batch."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("maintenance_interval", MAINTENANCE_INTERVAL)
        kwargs.setdefault("worker_ttl", WORKER_TTL)
        super().__init__(*args, **kwargs)

    def run_maintenance_tasks(self) -> None:
        """RQ's own maintenance, then restart any feed whose poll schedule stalled (a feed's
        polls normally schedule each other; this is the safety net, every 30 s per worker)."""
        super().run_maintenance_tasks()
        try:
            reschedule_stalled_feeds()
        except redis.RedisError as exc:
            self.log.warning("feeds: could not check poll schedules (%s); next maintenance tries again", exc)


def queue_connection(settings: Settings):
    return connect(resolve_redis_urls(settings)[0], WORKER_PATIENCE)


def run_workers(settings: Settings, processes: int = 1, burst: bool = False) -> None:
    configure_logging("worker")
    tune_gc()
    connection = queue_connection(settings)
    queues = [Queue(settings.queue_name, connection=connection)]
    if processes > 1:
        pool = WorkerPool(queues, connection=connection, num_workers=processes, worker_class=StorypushWorker)
        pool.start(burst=burst)
        return
    StorypushWorker(queues, connection=connection).work(with_scheduler=True, burst=burst)

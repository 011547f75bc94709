"""Start RQ workers configured for storypush (scheduler on, fast recovery of killed jobs)."""

from __future__ import annotations

import logging

from rq import Queue, SimpleWorker
from rq.worker_pool import WorkerPool

from service.settings import Settings
from service.store import connect, resolve_redis_urls

# Only a worker's maintenance pass (every maintenance_interval) hands a job
# abandoned by a SIGKILLed worker back to the queue, once its heartbeat lapsed
# (a SimpleWorker's: job_timeout + 60 s). RQ's default of 10 minutes would let a
# killed batch sit for 11 minutes; 30 s bounds it near 2.5 minutes.
MAINTENANCE_INTERVAL = 30


class StorypushWorker(SimpleWorker):
    """Runs jobs in the worker process itself (no fork per job), so the event loop
    and the kept-alive connections to push services live from one batch to the
    next instead of a TLS handshake per connection per batch."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("maintenance_interval", MAINTENANCE_INTERVAL)
        super().__init__(*args, **kwargs)


def queue_connection(settings: Settings):
    return connect(resolve_redis_urls(settings)[0])


def run_workers(settings: Settings, processes: int = 1, burst: bool = False) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    connection = queue_connection(settings)
    queues = [Queue(settings.queue_name, connection=connection)]
    if processes > 1:
        pool = WorkerPool(queues, connection=connection, num_workers=processes, worker_class=StorypushWorker)
        pool.start(burst=burst)
        return
    StorypushWorker(queues, connection=connection).work(with_scheduler=True, burst=burst)

"""Start RQ workers configured for storypush (scheduler on, fast recovery of killed jobs)."""

from __future__ import annotations

import logging

from rq import Queue, Worker
from rq.worker_pool import WorkerPool

from service.settings import Settings
from service.store import connect, resolve_redis_urls

# A SIGKILLed worker's job stays "started" until its heartbeat lapses
# (job_monitoring_interval + 60 s), and only a worker's maintenance pass
# (every maintenance_interval) hands it back to the queue. RQ's defaults
# (30 s and 10 min) let a killed batch sit for up to 11 minutes; these keep it
# under about 2 minutes.
JOB_MONITORING_INTERVAL = 10
MAINTENANCE_INTERVAL = 30


def queue_connection(settings: Settings):
    return connect(resolve_redis_urls(settings)[0])


def run_workers(settings: Settings, processes: int = 1, burst: bool = False) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    connection = queue_connection(settings)
    queues = [Queue(settings.queue_name, connection=connection)]
    if processes > 1:
        pool = WorkerPool(queues, connection=connection, num_workers=processes)
        pool.start(burst=burst)
        return
    worker = Worker(
        queues,
        connection=connection,
        job_monitoring_interval=JOB_MONITORING_INTERVAL,
        maintenance_interval=MAINTENANCE_INTERVAL,
    )
    worker.work(with_scheduler=True, burst=burst)

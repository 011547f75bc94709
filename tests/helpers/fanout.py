"""Driving a fan-out from a test: subscribers in, RQ jobs run in this process."""

from __future__ import annotations

import time

import requests
from rq import Queue
from rq.registry import ScheduledJobRegistry

from service.subscriptions import Subscription
from service.vapid import b64url_decode
from workers.runner import StorypushWorker


def subscribe(client, subscriptions: list[dict], topics: list[str]) -> list[int]:
    """POST each subscription through a Flask test client; their ids."""
    ids = []
    for subscription in subscriptions:
        response = client.post("/api/v1/subscriptions", json={"subscription": subscription, "topics": topics})
        assert response.status_code == 201, response.get_json()
        ids.append(int(response.get_json()["id"]))
    return ids


def subscribe_all(base: str, subscriptions: list[dict], topics: list[str]) -> None:
    """POST each subscription to a running `storypush web` at `base`."""
    with requests.Session() as http:
        for subscription in subscriptions:
            response = http.post(f"{base}/api/v1/subscriptions", json={"subscription": subscription, "topics": topics})
            assert response.status_code == 201, response.text


def drain(redis_client, queue_name: str, timeout: float = 30.0) -> None:
    """Run jobs in this process until nothing is queued or scheduled (scheduled jobs moved when due)."""
    queue = Queue(queue_name, connection=redis_client)
    scheduled = ScheduledJobRegistry(queue=queue)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job_id in scheduled.get_jobs_to_schedule(int(time.time()) + 1):
            queue.enqueue_job(queue.fetch_job(job_id))
            scheduled.remove(job_id)
        if queue.count:
            StorypushWorker([queue], connection=redis_client).work(burst=True)
        elif scheduled.count == 0:
            return
        else:
            time.sleep(0.2)
    raise AssertionError("jobs did not drain in time")


def next_job(queue: Queue):
    """Take the next job off `queue` without a worker (the test then performs it)."""
    return queue.dequeue_any([queue], None, connection=queue.connection)[0]


def store_all(store, subscriptions: list[dict], topics: tuple[str, ...] = ("animals",)) -> None:
    """Bulk set-up (what the API's upsert writes), so thousands of subscribers take a second."""
    for item in subscriptions:
        keys = item["keys"]
        store.subscriptions.upsert(
            Subscription(item["endpoint"], b64url_decode(keys["p256dh"]), b64url_decode(keys["auth"]), topics)
        )

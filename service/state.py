"""What one process holds for its life: settings, Redis connections, the queue, the VAPID key.

The web app keeps one in `app.extensions`; a worker process extends it (`workers.runtime`)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import redis
from flask import current_app
from rq import Queue

from .receipts import receipt_key
from .settings import Settings
from .store import WEB_PATIENCE, Store, connect, open_store, resolve_redis_urls
from .vapid import VapidKey, require_key


@dataclass
class AppState:
    settings: Settings
    # Seconds a Redis command keeps retrying through an outage (see store.connect).
    redis_patience: ClassVar[float] = WEB_PATIENCE

    @cached_property
    def _urls(self) -> tuple[str, str]:
        return resolve_redis_urls(self.settings)

    @cached_property
    def store(self) -> Store:
        return open_store(self._urls[1], self.settings.topics, self.redis_patience)

    @cached_property
    def queue_connection(self) -> redis.Redis:
        """The job-queue Redis (may be a different server from the store)."""
        if self._urls[0] == self._urls[1]:
            return self.store.client
        return connect(self._urls[0], self.redis_patience)

    @cached_property
    def queue(self) -> Queue:
        return Queue(self.settings.queue_name, connection=self.queue_connection)

    @cached_property
    def vapid_key(self) -> VapidKey:
        return require_key(self.settings)

    @cached_property
    def receipt_key(self) -> bytes:
        return receipt_key(self.vapid_key)


def current_state() -> AppState:
    return current_app.extensions["storypush"]

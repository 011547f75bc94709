"""What a worker process keeps between jobs: settings, Redis, the VAPID key, one
event loop and one `HttpSender`, so kept-alive connections to push services
and signed VAPID headers survive from one batch to the next.

Jobs are plain functions taking ids; they reach this through `runtime()`,
built once from the environment (tests call `reset_runtime()` after changing it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import cached_property

import redis
from rq import Queue

from service.receipts import receipt_key
from service.settings import Settings, load_settings
from service.store import Store, connect, open_store, resolve_redis_urls
from service.vapid import VapidKey, require_key

from .delivery import HttpSender
from .webpush import VapidHeaders


@dataclass
class Runtime:
    settings: Settings

    @cached_property
    def _urls(self) -> tuple[str, str]:
        return resolve_redis_urls(self.settings)

    @cached_property
    def store(self) -> Store:
        return open_store(self._urls[1], self.settings.topics)

    @cached_property
    def queue_connection(self) -> redis.Redis:
        return self.store.client if self._urls[0] == self._urls[1] else connect(self._urls[0])

    @cached_property
    def queue(self) -> Queue:
        return Queue(self.settings.queue_name, connection=self.queue_connection)

    @cached_property
    def vapid_key(self) -> VapidKey:
        return require_key(self.settings)

    @cached_property
    def receipt_key(self) -> bytes:
        return receipt_key(self.vapid_key)

    @cached_property
    def loop(self) -> asyncio.AbstractEventLoop:
        try:
            import uvloop

            return uvloop.new_event_loop()
        except ImportError:  # pragma: no cover - uvloop is a dependency; keep working without it
            return asyncio.new_event_loop()

    @cached_property
    def sender(self) -> HttpSender:
        subject = self.settings.vapid_subject
        if not subject:
            raise RuntimeError("STORYPUSH_VAPID_SUBJECT is required to send pushes")
        vapid = VapidHeaders(self.vapid_key.private_key, subject)
        return HttpSender(vapid, max_in_flight=self.settings.max_in_flight)


_runtime: Runtime | None = None


def runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        _runtime = Runtime(load_settings())
    return _runtime


def set_runtime(value: Runtime | None) -> None:
    """Install a runtime built from explicit settings (in-process tests, the benchmark)."""
    global _runtime
    if _runtime is not None and value is not _runtime and "sender" in _runtime.__dict__:
        _runtime.sender.close()
    _runtime = value


def reset_runtime() -> None:
    set_runtime(None)

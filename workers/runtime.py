"""What a worker process keeps between jobs: settings, Redis, the VAPID key, one
event loop and one `HttpSender`, so kept-alive connections to push services
and signed VAPID headers survive from one batch to the next.

Jobs are plain functions taking ids; they reach this through `runtime()`,
built once from the environment (tests install their own with `set_runtime()`).
"""

from __future__ import annotations

import asyncio
from functools import cached_property

import uvloop

from service.settings import load_settings
from service.state import AppState
from service.store import WORKER_PATIENCE, connect_async
from service.store.outcome_store import OutcomeStore

from .delivery import HttpSender
from .lanes import LanePolicy
from .retry import RetryPolicy
from .webpush import VapidHeaders


class Runtime(AppState):
    """The web app's state plus what only senders need."""

    redis_patience = WORKER_PATIENCE

    @cached_property
    def loop(self) -> asyncio.AbstractEventLoop:
        return uvloop.new_event_loop()

    @cached_property
    def sender(self) -> HttpSender:
        subject = self.settings.vapid_subject
        if not subject:
            raise RuntimeError("STORYPUSH_VAPID_SUBJECT is required to send pushes")
        vapid = VapidHeaders(self.vapid_key.private_key, subject)
        policy = LanePolicy(ceiling=self.settings.max_in_flight)
        return HttpSender(vapid, policy, push_hosts=self.settings.push_hosts)

    @cached_property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_attempts=self.settings.max_attempts)

    @cached_property
    def outcomes(self) -> OutcomeStore:
        """Outcome writes from the event loop (an asyncio client on the store Redis)."""
        return OutcomeStore(connect_async(self._urls[1], self.redis_patience))


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

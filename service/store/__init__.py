"""The one module that owns Redis: connections, keys and every read and write.

It opens the resource once per process and hands it to whoever needs it; views and
jobs call its methods and never spell a key.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import redis
import redis.asyncio
import redis.asyncio.retry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ..settings import Settings
from ..topics import Topic
from ..vocabulary import PromptEventType
from . import keys
from .campaign_store import AudienceStore, CampaignStore
from .feed_store import FeedStore
from .frequency_cap import FrequencyCapStore
from .metrics_store import MetricsStore
from .rate_limit import RateLimiter
from .subscription_store import SubscriptionStore


def resolve_redis_urls(settings: Settings) -> tuple[str, str]:
    """(queue URL, store URL); starts or joins the embedded server when REDIS_URL is unset."""
    if settings.redis_url:
        queue_url = settings.redis_url
    else:
        from ..embedded_redis import ensure_embedded_redis

        queue_url = ensure_embedded_redis(settings.data_dir).url
    return queue_url, settings.store_url or queue_url


# How long a command keeps retrying while Redis is unreachable (a restart, a failover).
# Web requests give up soon and answer 503; workers wait out a restart, so a batch in
# progress (and the RQ worker around it) carries on instead of dying with the job.
WEB_PATIENCE = 2.0
WORKER_PATIENCE = 60.0
_BACKOFF_CAP = 1.0


def _reconnect_tries(patience: float) -> int:
    """redis-py's own retry: 0.05 s doubling up to 1 s between tries, for about `patience` s.

    Only connection errors are retried (refused, reset, closed): the command then either
    never reached Redis or Redis went away with it. A timeout is not retried, since a slow
    command may still have run and most of ours (counters, scripts) must not run twice.
    """
    delays, tries = 0.0, 0
    while delays < patience:
        tries += 1
        delays += min(_BACKOFF_CAP, 0.05 * 2**tries)
    return tries


# Timeouts so a wedged Redis surfaces as an error (and a 503 from /healthz) instead of
# hanging a web worker; health checks revive idle pooled sockets.
_CLIENT_OPTIONS = {"socket_connect_timeout": 5, "socket_timeout": 10, "health_check_interval": 30}


def connect(url: str, patience: float = WEB_PATIENCE) -> redis.Redis:
    retry = Retry(_backoff(), _reconnect_tries(patience), supported_errors=(redis.ConnectionError,))
    return redis.Redis.from_url(url, retry=retry, **_CLIENT_OPTIONS)


def connect_async(url: str, patience: float = WORKER_PATIENCE) -> redis.asyncio.Redis:
    """The same connection, for a worker's event loop (see `outcome_store`)."""
    retry = redis.asyncio.retry.Retry(_backoff(), _reconnect_tries(patience), supported_errors=(redis.ConnectionError,))
    return redis.asyncio.Redis.from_url(url, retry=retry, **_CLIENT_OPTIONS)


def _backoff() -> ExponentialBackoff:
    return ExponentialBackoff(cap=_BACKOFF_CAP, base=0.05)


@dataclass
class Store:
    """Typed access to storypush's state in the store Redis."""

    client: redis.Redis
    topics: tuple[Topic, ...]

    @cached_property
    def subscriptions(self) -> SubscriptionStore:
        return SubscriptionStore(self.client, [t.id_ for t in self.topics])

    @cached_property
    def campaigns(self) -> CampaignStore:
        return CampaignStore(self.client)

    @cached_property
    def audiences(self) -> AudienceStore:
        return AudienceStore(self.client)

    @cached_property
    def metrics(self) -> MetricsStore:
        return MetricsStore(self.client)

    @cached_property
    def feeds(self) -> FeedStore:
        return FeedStore(self.client)

    @cached_property
    def frequency_caps(self) -> FrequencyCapStore:
        return FrequencyCapStore(self.client)

    @cached_property
    def rate_limiter(self) -> RateLimiter:
        return RateLimiter(self.client)

    @cached_property
    def topic_ids(self) -> frozenset[str]:
        return frozenset(t.id_ for t in self.topics)

    def count_prompt_event(self, kind: PromptEventType) -> None:
        self.client.hincrby(keys.PROMPT_FUNNEL, kind, 1)

    def prompt_funnel(self) -> dict[str, int]:
        raw = self.client.hgetall(keys.PROMPT_FUNNEL)
        counts = {k.decode(): int(v) for k, v in raw.items()}
        return {kind.value: counts.get(kind.value, 0) for kind in PromptEventType}


def open_store(url: str, topics: tuple[Topic, ...], patience: float = WEB_PATIENCE) -> Store:
    return Store(connect(url, patience), topics)

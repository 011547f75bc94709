"""Shared fixtures: a real Redis (embedded, or REDIS_URL), settings, the app and its clients.

There is no fake anywhere: if Redis cannot start, the session fails loudly.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from service import create_app
from service.embedded_redis import EmbeddedRedis, ensure_embedded_redis
from service.logs import _StorypushHandler, configure_logging
from service.settings import Settings
from service.vapid import VapidKey, create_key
from tests.helpers import TEST_SUBJECT
from tests.helpers.admin import ADMIN_TOKEN


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """REDIS_URL when set (its database is flushed!), else a private embedded server."""
    url = os.environ.get("REDIS_URL")
    if url:
        redis.Redis.from_url(url).ping()  # fail loudly, never skip
        yield url
        return
    server: EmbeddedRedis = ensure_embedded_redis(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture
def settings(redis_client: redis.Redis, redis_url: str, tmp_path: Path, webhook_secret: str) -> Settings:
    return Settings(
        redis_url=redis_url,
        data_dir=tmp_path / "data",
        vapid_subject=TEST_SUBJECT,
        webhook_secret=webhook_secret,
        admin_token=ADMIN_TOKEN,
        rate_limit_per_minute=10_000,
    )


@pytest.fixture
def vapid_key(settings: Settings) -> VapidKey:
    return create_key(settings)[0]


@pytest.fixture
def app(settings: Settings, vapid_key: VapidKey):
    app = create_app(settings)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def store(app):
    return app.extensions["storypush"].store


@pytest.fixture(scope="session")
def push_sim() -> Iterator:
    """One real HTTPS push-service simulator process for the session (reset per use)."""
    from benchmarks.pushsim import PushSimulator

    with PushSimulator() as sim:
        yield sim


@pytest.fixture
def sim(push_sim, monkeypatch: pytest.MonkeyPatch):
    """The simulator, reset, with its CA trusted through SSL_CERT_FILE as in production."""
    push_sim.reset(subscribers=True)
    push_sim.set_latency(0)
    monkeypatch.setenv("SSL_CERT_FILE", push_sim.ca_file)
    return push_sim


@pytest.fixture
def fanout_settings(settings: Settings, sim) -> Settings:
    """Settings that accept the simulator as a push service, with small batches."""
    authority = sim.origin.removeprefix("https://")
    return settings.with_overrides(push_hosts=(authority,), batch_size=20, max_attempts=3)


@pytest.fixture
def fanout(fanout_settings: Settings, vapid_key: VapidKey, redis_client: redis.Redis):
    """The app and an in-process worker runtime sharing the fan-out settings."""
    from workers.runtime import Runtime, set_runtime

    app = create_app(fanout_settings)
    set_runtime(Runtime(fanout_settings))
    yield app
    set_runtime(None)


@pytest.fixture
def feed_server() -> Iterator:
    """A real HTTP server on 127.0.0.1 serving the test's feeds (see tests/helpers/feed_server.py)."""
    from tests.helpers.feed_server import FeedServer

    with FeedServer() as server:
        yield server


@pytest.fixture
def feed_settings(settings: Settings, feed_server) -> Settings:
    """Settings that trust the local feed server (plain http on 127.0.0.1), as an operator's
    STORYPUSH_FEED_HOSTS would; a short fetch timeout keeps failure tests quick."""
    from service.settings import FeedSettings

    return settings.with_overrides(feeds=FeedSettings(trusted_hosts=(feed_server.authority,), timeout=3))


@pytest.fixture
def json_logs():
    """Capture JSON log lines as the worker and web processes write them."""
    stream = io.StringIO()
    configure_logging("worker", stream=stream)
    yield stream
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StorypushHandler)]:
        root.removeHandler(handler)

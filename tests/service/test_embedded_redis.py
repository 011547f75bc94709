"""The embedded redis-server: its durability settings, sharing one server, surviving `kill -9`.

These start real redis-server processes in a temp data dir (never the session
fixture's server), because the point is the process lifecycle itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from service.embedded_redis import EmbeddedRedis, ensure_embedded_redis
from service.store import keys
from service.store.subscription_store import SubscriptionStore
from service.subscriptions import Subscription
from service.topics import DEFAULT_TOPICS
from tests.helpers import BrowserKeys, fcm_endpoint, kill_embedded_redis

REPO = Path(__file__).resolve().parents[2]
TOPIC_IDS = [id_ for id_, _ in DEFAULT_TOPICS]


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data dir whose redis-server, whoever started it, is killed after the test."""
    yield tmp_path
    kill_embedded_redis(tmp_path)


def _client(server: EmbeddedRedis) -> redis.Redis:
    return redis.Redis.from_url(server.url, socket_timeout=5)


def _run_id(server: EmbeddedRedis) -> str:
    client = _client(server)
    try:
        return client.info("server")["run_id"]
    finally:
        client.close()


def test_starts_a_server_with_aof_everysec_and_noeviction(data_dir: Path):
    server = ensure_embedded_redis(data_dir)
    try:
        assert server.process is not None and server.process.poll() is None
        assert server.socket_path == data_dir / "redis" / "redis.sock"
        client = _client(server)
        config = {}
        for name in ("appendonly", "appendfsync", "maxmemory-policy", "save", "port"):
            config.update({k: v for k, v in client.config_get(name).items()})
        client.close()
        assert config["appendonly"] == "yes"
        assert config["appendfsync"] == "everysec"
        assert config["maxmemory-policy"] == "noeviction"
        # No RDB snapshots (the AOF is the persistence) and no TCP port to expose.
        assert config["save"] == ""
        assert config["port"] == "0"
        # Only the owner may connect through the socket.
        assert server.socket_path.stat().st_mode & 0o777 == 0o700
    finally:
        server.stop()
    assert server.process.poll() is not None
    assert not server.ping()


def test_second_call_and_second_process_join_the_same_server(data_dir: Path):
    server = ensure_embedded_redis(data_dir)
    try:
        run_id = _run_id(server)

        again = ensure_embedded_redis(data_dir)
        assert again.process is None  # joined, did not start one
        assert again.url == server.url
        assert _run_id(again) == run_id

        # Another process (a gunicorn worker or RQ worker would do the same).
        script = textwrap.dedent(
            f"""
            import json
            from pathlib import Path
            import redis
            from service.embedded_redis import ensure_embedded_redis
            server = ensure_embedded_redis(Path({str(data_dir)!r}))
            client = redis.Redis.from_url(server.url)
            client.set("written-by-the-other-process", "yes")
            print(json.dumps({{"started": server.process is not None, "url": server.url,
                               "run_id": client.info("server")["run_id"]}}))
            """
        )
        result = subprocess.run(
            [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
        )
        seen = json.loads(result.stdout.strip().splitlines()[-1])
        assert seen == {"started": False, "url": server.url, "run_id": run_id}
        client = _client(server)
        assert client.get("written-by-the-other-process") == b"yes"
        client.close()
    finally:
        server.stop()


def _subscription(index: int, keys_: BrowserKeys) -> Subscription:
    return Subscription(
        endpoint=fcm_endpoint(),
        p256dh=keys_.p256dh,
        auth=keys_.auth,
        topics=(TOPIC_IDS[index % len(TOPIC_IDS)], TOPIC_IDS[(index + 2) % len(TOPIC_IDS)]),
        locale="en-GB",
        timezone="Europe/London",
    )


def test_acknowledged_writes_survive_kill_9_and_restart(data_dir: Path):
    server = ensure_embedded_redis(data_dir)
    assert server.process is not None
    client = _client(server)
    store = SubscriptionStore(client, TOPIC_IDS)
    browser_keys = BrowserKeys.generate()  # the store does not care that keys repeat
    written: dict[int, Subscription] = {}
    for index in range(200):
        subscription = _subscription(index, browser_keys)
        id_, created = store.upsert(subscription)
        assert created
        written[id_] = subscription
    # Immediately after the last acknowledged write: no clean shutdown, no fsync wait.
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=10)
    client.close()
    assert not server.ping()

    restarted = ensure_embedded_redis(data_dir)
    try:
        assert restarted.process is not None  # a new server, reading the AOF
        client = _client(restarted)
        store = SubscriptionStore(client, TOPIC_IDS)
        assert store.count() == 200
        assert int(client.get(keys.SUBSCRIPTION_SEQ)) == 200
        for id_, subscription in written.items():
            assert store.get(id_) == subscription
            assert store.id_for(subscription.endpoint) == id_
        by_topic = store.count_by_topic()
        expected = {topic: sum(topic in s.topics for s in written.values()) for topic in TOPIC_IDS}
        assert by_topic == expected
        client.close()
    finally:
        restarted.stop()

"""The queue Redis and the store Redis may be different servers (STORYPUSH_STORE_URL)."""

from __future__ import annotations

import redis

from service import create_app
from service.embedded_redis import ensure_embedded_redis
from service.store import keys
from tests.helpers.cms import publish
from tests.helpers.fanout import drain, subscribe
from workers.runtime import Runtime, set_runtime


def test_fan_out_with_store_and_queue_on_different_servers(
    fanout_settings, vapid_key, sim, webhook_secret, redis_client, tmp_path
):
    store_server = ensure_embedded_redis(tmp_path / "store-redis")
    try:
        settings = fanout_settings.with_overrides(store_url=store_server.url)
        app = create_app(settings)
        set_runtime(Runtime(settings))
        subscribe(app.test_client(), sim.mint(12, vapid_key.public_bytes), ["animals"])
        campaign = publish(app, webhook_secret)
        drain(redis_client, "storypush")
        assert len(sim.messages()) == 12
        store_client = redis.Redis.from_url(store_server.url)
        assert store_client.exists(keys.campaign(campaign)) and store_client.get(keys.SUBSCRIPTION_COUNT) == b"12"
        assert not redis_client.keys(keys.PREFIX + "*")  # nothing of the store on the queue server
        assert not store_client.keys("rq:*")  # and no jobs on the store server
        assert app.extensions["storypush"].store.campaigns.get(campaign)["state"] == "done"
        store_client.close()
    finally:
        set_runtime(None)
        store_server.stop()

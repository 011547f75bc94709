"""A Redis restart in the middle of a campaign, with real worker processes.

The promise: "a killed worker, a flaky push service or a Redis restart loses no
subscription and no delivery; no subscriber gets a story twice." The server here is a
private embedded one (never REDIS_URL's: the test stops it), shut down cleanly while
batches are being sent and started again on the same data directory.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from service import create_app
from service.embedded_redis import ensure_embedded_redis
from service.settings import Settings
from tests.helpers.cms import STORY, signed
from tests.helpers.cms import publish_over_http as publish
from tests.helpers.fanout import subscribe_all
from tests.helpers.processes import process_env, running_stack, wait_for

pytestmark = pytest.mark.slow

IN_FLIGHT = 4
DOWN_FOR = 6.0  # longer than the web's patience, well within the workers'


def test_a_redis_restart_mid_campaign_loses_nothing_and_sends_once(
    fanout_settings: Settings, sim, vapid_key, webhook_secret: str, tmp_path: Path
):
    redis_dir = tmp_path / "restartable"
    server = ensure_embedded_redis(redis_dir)
    try:
        settings = fanout_settings.with_overrides(redis_url=server.url)
        store = create_app(settings).extensions["storypush"].store
        env = process_env(
            settings,
            ",".join(settings.push_hosts),
            sim.ca_file,
            STORYPUSH_BATCH_SIZE="20",
            STORYPUSH_MAX_ATTEMPTS="4",
            STORYPUSH_MAX_IN_FLIGHT=str(IN_FLIGHT),
        )
        with running_stack(env, tmp_path) as stack:
            stack.start_web()
            followers = sim.mint(60, vapid_key.public_bytes)
            subscribe_all(stack.base, followers, ["animals"])
            sim.set_latency(250)
            workers = [stack.start_worker(), stack.start_worker()]
            campaign = publish(stack.base, webhook_secret, STORY)
            wait_for(lambda: len(sim.messages()) >= 10, 60, "the first pushes")

            server.stop()
            stopped_at = time.time()
            # While it is down: health says so, and a reader's subscribe and the CMS's webhook
            # get a 503 in the error shape with Retry-After (never a 500), after the web's
            # short patience.
            assert requests.get(stack.base + "/healthz", timeout=10).status_code == 503
            late = sim.mint(1, vapid_key.public_bytes)[0]
            refused = requests.post(
                stack.base + "/api/v1/subscriptions", json={"subscription": late, "topics": ["animals"]}, timeout=10
            )
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "unavailable", refused.text
            assert refused.headers["Retry-After"] == "5"
            body, headers = signed(webhook_secret, {"type": "story.published", "data": STORY | {"id": "later-story"}})
            cms = requests.post(stack.base + "/webhooks/cms", data=body, headers=headers, timeout=10)
            assert cms.status_code == 503 and cms.json()["error"]["code"] == "unavailable", cms.text
            time.sleep(max(0.0, DOWN_FOR - (time.time() - stopped_at)))
            server = ensure_embedded_redis(redis_dir)

            wait_for(lambda: (store.campaigns.get(campaign) or {}).get("state") == "done", 120, "the campaign", 1)
            finished_after = time.time() - stopped_at
            assert [w.poll() for w in workers] == [None, None], "a worker died with the Redis restart"
            health = requests.get(stack.base + "/healthz", timeout=5).json()
            assert health == {"redis": "ok", "workers": 2}

        received = Counter(m.token for m in sim.messages())
        tokens = [f["endpoint"].rsplit("/", 1)[1] for f in followers]
        assert all(received[t] >= 1 for t in tokens), "somebody was skipped"
        duplicated = [t for t in tokens if received[t] > 1]
        # Only pushes in flight (at most IN_FLIGHT per worker) as Redis went away may repeat.
        assert len(duplicated) <= 2 * IN_FLIGHT, duplicated
        state = store.campaigns.get(campaign)
        assert (state["state"], state["targeted"], state["failed"]) == ("done", 60, 0), state
        assert all(store.subscriptions.get_by_endpoint(f["endpoint"]) for f in followers), "a subscription was lost"
        print(json.dumps({"finished_after_restart_s": round(finished_after, 1), "duplicates": len(duplicated)}))
    finally:
        server.stop()

"""Fan-out that no push service can hold back, with real processes: gunicorn, RQ workers,
Redis and the HTTPS push-service simulator (several origins at once where it matters)."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import requests

from service.subscriptions import Subscription
from service.vapid import b64url_decode
from tests.e2e.conftest import wait_for
from tests.e2e.test_fanout_e2e import publish
from tests.service.test_webhooks import STORY, signed

pytestmark = pytest.mark.slow


def store_all(store, subscriptions: list[dict], topics: tuple[str, ...] = ("animals",)) -> None:
    """Bulk set-up (what the API's upsert writes), so thousands of subscribers take a second."""
    for item in subscriptions:
        keys = item["keys"]
        store.subscriptions.upsert(
            Subscription(item["endpoint"], b64url_decode(keys["p256dh"]), b64url_decode(keys["auth"]), topics)
        )


def unpublish(base: str, secret: str, story_id: str) -> None:
    body, headers = signed(secret, {"type": "story.unpublished", "data": {"id": story_id}})
    response = requests.post(f"{base}/webhooks/cms", data=body, headers=headers, timeout=10)
    assert response.status_code == 200, response.text


def test_a_cancel_stops_every_batch_within_a_second(stack, stack_env, sim, vapid_key, webhook_secret, store):
    """`story.unpublished` a quarter of the way through: nothing more leaves any worker a
    second later, although workers run ahead over many batches of the campaign."""
    n = 4000
    # Batches that take seconds to drain (1,000 pushes, 100 in flight, 200 ms answers), so
    # only stopping them, not just starting no new ones, meets the second.
    stack_env.update(STORYPUSH_BATCH_SIZE="1000", STORYPUSH_MAX_IN_FLIGHT="100")
    stack.start_web()
    store_all(store, sim.mint(n, vapid_key.public_bytes))
    sim.set_latency(200)
    stack.start_worker()
    stack.start_worker()
    campaign = publish(stack.base, webhook_secret, STORY)
    wait_for(lambda: sim.stats()["delivered"] >= n // 4, 60, "a quarter of the pushes", interval=0.02)
    unpublish(stack.base, webhook_secret, STORY["id"])
    cancelled_at = time.time()
    assert store.campaigns.get(campaign)["state"] == "cancelled"
    time.sleep(3)
    received = [m.received_at for m in sim.messages()]
    after = [t - cancelled_at for t in received if t > cancelled_at]
    late = [t for t in after if t > 1.0]
    print(f"\ncancel: {len(received)} of {n} sent, {len(after)} after the cancel, the last {max(after, default=0):.3f}s")
    assert not late, f"{len(late)} pushes went out more than 1 s after the cancel"
    # what was on the wire (2 workers × 100), plus what started while the cancel was noticed
    assert len(after) <= 2 * 100 + 60
    assert len(received) < n * 3 // 4
    assert Counter(m.token for m in sim.messages()).most_common(1)[0][1] == 1

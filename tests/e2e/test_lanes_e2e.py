"""Fan-out that no push service can hold back, with real processes: gunicorn, RQ workers,
Redis and the HTTPS push-service simulator (several origins at once where it matters)."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import requests

from benchmarks.pushsim import PushSimulator
from tests.helpers.cms import STORY, signed
from tests.helpers.cms import publish_over_http as publish
from tests.helpers.fanout import store_all
from tests.helpers.processes import process_env, running_stack, wait_for
from workers.message import topic_header

pytestmark = pytest.mark.slow


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
    print(
        f"\ncancel: {len(received)} of {n} sent, {len(after)} after the cancel, the last {max(after, default=0):.3f}s"
    )
    assert not late, f"{len(late)} pushes went out more than 1 s after the cancel"
    # what was on the wire (2 workers × 100), plus what started while the cancel was noticed
    assert len(after) <= 2 * 100 + 60
    assert len(received) < n * 3 // 4
    assert Counter(m.token for m in sim.messages()).most_common(1)[0][1] == 1


def follow(store, campaign: str) -> tuple[dict, float, int]:
    """Wait (at most a minute) for `campaign` to be done: its state, its pushes a second and
    the highest lane limit the workers reported meanwhile."""
    peak = 0
    deadline = time.monotonic() + 60
    while store.campaigns.get(campaign)["state"] != "done":
        assert time.monotonic() < deadline, f"campaign {campaign} did not finish"
        peak = max([peak, *(row["limit"] for row in store.metrics.lanes())])
        time.sleep(0.1)
    state = store.campaigns.get(campaign)
    return state, state["targeted"] / (state["finished_at"] - state["started_at"]), peak


def test_the_next_campaign_of_a_running_worker_is_not_held_back_by_connections_closed_meanwhile(
    stack, sim, vapid_key, webhook_secret, store
):
    """Push services close idle connections; a worker's loop only runs while it has a job,
    so it sees that only when its next campaign writes on them. Those pushes go out again
    on new connections: the lane's circuit stays closed and nobody waits for a retry."""
    n = 2000
    stack.start_web()
    store_all(store, sim.mint(n, vapid_key.public_bytes))
    stack.start_worker()
    first = publish(stack.base, webhook_secret, STORY)
    wait_for(lambda: store.campaigns.get(first)["state"] == "done", 60, "the first campaign")
    time.sleep(0.5)  # the worker is waiting for a job, its connections kept alive
    sim.refuse_connections(0)  # the push service resets them all
    sim.refuse_connections(0, on=False)
    sim.reset()
    began = time.time()
    second = publish(stack.base, webhook_secret, {**STORY, "id": "next-story"})
    wait_for(lambda: store.campaigns.get(second)["state"] == "done", 60, "the next campaign")
    print(f"\nnext campaign after every connection was closed: {time.time() - began:.2f}s")
    state = store.campaigns.get(second)
    assert (state["sent"], state["failed"], state["retrying"]) == (n, 0, 0)
    assert time.time() - began < 10  # a circuit opened would defer pushes for 15 s
    lanes = {row["origin"]: row for row in store.metrics.lanes()}
    assert "circuit_open" not in lanes[sim.authorities[0]]["states"]
    assert Counter(m.token for m in sim.messages()).most_common(1)[0][1] == 1


def test_a_running_workers_lane_grows_again_when_its_push_service_answers_slower_than_last_time(
    stack, sim, vapid_key, webhook_secret, store
):
    """A push service that answered in 10 ms for one campaign and in 200 ms for the next: the
    lane's latency floor (and its "more in flight bought nothing") were learnt on the first,
    and must not keep it at the small limit 10 ms answers needed (it used to stay there)."""
    n = 6000
    stack.start_web()
    store_all(store, sim.mint(n, vapid_key.public_bytes))
    sim.set_latency(10)
    stack.start_worker()
    first = publish(stack.base, webhook_secret, STORY)
    wait_for(lambda: store.campaigns.get(first)["state"] == "done", 60, "the first campaign")
    [before] = [row["limit"] for row in store.metrics.lanes()]
    sim.set_latency(200)
    time.sleep(1.5)  # a quiet moment between two stories
    second = publish(stack.base, webhook_secret, {**STORY, "id": "slower-story"})
    state, rate, peak = follow(store, second)
    print(f"\nlimit {before} after 10 ms answers, peak {peak} at 200 ms: {rate:,.0f} pushes/s")
    assert state["sent"] == n
    assert peak > 2 * before and rate > 2 * before / 0.2  # a lane stuck at `before` makes before / 0.2 a second


def test_devices_over_their_quota_hold_back_no_other_subscriber_of_their_push_service(
    stack, sim, vapid_key, webhook_secret, store
):
    """Three subscriptions whose push service answers a throttle to every push of theirs:
    one as Apple does for "too many requests for the same device token", one as WNS does
    for a throttled channel, one with a bare 429. Before, one such subscription kept the
    lane of its push service paused, and 200 of 6,000 others were still waiting after 90 s.
    Now the others go out at once, and the three wait for a retry of their own."""
    n = 3000
    subscriptions = sim.mint(n, vapid_key.public_bytes)
    store_all(store, subscriptions)
    apple, wns, bare = (s["endpoint"] for s in subscriptions[100::1000])
    sim.fail(apple, 429, always=True, reason="TooManyRequests")
    sim.fail(wns, 406, always=True, headers={"X-WNS-Status": "channelthrottled"})
    sim.fail(bare, 429, always=True)
    stack.start_web()
    stack.start_worker()
    began = time.monotonic()
    campaign = publish(stack.base, webhook_secret, STORY)
    wait_for(lambda: sim.stats()["delivered"] >= n - 3, 30, "every other push")
    took = time.monotonic() - began
    print(f"\n{n - 3} others delivered in {took:.2f}s beside 3 devices over their quota")
    assert took < 10
    wait_for(lambda: store.campaigns.get(campaign)["retrying"] == 3, 10, "the three to wait for a retry")
    assert store.campaigns.get(campaign)["sent"] == n - 3
    assert [r["status"] for r in sim.rejections()].count(429) == 1 + 2  # the bare one was tried twice
    wait_for(lambda: store.metrics.lane_events().get(("device_throttled", sim.authorities[0])) == 3, 5, "the report")
    assert Counter(m.token for m in sim.messages()).most_common(1)[0][1] == 1


# -- two push-service origins: one healthy, one misbehaving ------------------------------


@pytest.fixture
def sim2(monkeypatch):
    """A simulator with two origins: 0 healthy, 1 the one that misbehaves."""
    with PushSimulator(origins=2, verify="sample:4") as simulator:
        monkeypatch.setenv("SSL_CERT_FILE", simulator.ca_file)
        yield simulator


def multi_origin_stack(fanout_settings, sim, tmp_path, in_flight: int):
    """web (and, started by the test, one worker) trusting and accepting every origin of `sim`."""
    env = process_env(
        fanout_settings,
        ",".join(sim.authorities),
        sim.ca_file,
        STORYPUSH_BATCH_SIZE="500",
        STORYPUSH_MAX_IN_FLIGHT=str(in_flight),
    )
    return running_stack(env, tmp_path)


@pytest.fixture
def stack2(fanout_settings, sim2, vapid_key, tmp_path):
    # 200: the old fixed window, now only a ceiling over every lane
    with multi_origin_stack(fanout_settings, sim2, tmp_path, 200) as stack:
        stack.start_web()
        yield stack


def store_mixed(store, sim, vapid_key, healthy: int, bad: int) -> tuple[list[dict], list[dict]]:
    """Subscribers of both origins stored interleaved in id order, so every batch holds both:
    the healthy ones follow "animals" and "sport", the bad origin's "animals" only."""
    good, poor = sim.mint(healthy, vapid_key.public_bytes), sim.mint(bad, vapid_key.public_bytes, origin=1)
    step = healthy // bad
    for i, subscription in enumerate(poor):
        store_all(store, good[i * step : (i + 1) * step], ("animals", "sport"))
        store_all(store, [subscription], ("animals",))
    store_all(store, good[len(poor) * step :], ("animals", "sport"))
    return good, poor


def finished_after(store, sim, campaign: str, origin: int) -> float:
    """Seconds from the campaign's start to the last of its pushes the origin received
    (told apart by their Topic header, one per story: most are not decrypted here)."""
    state = store.campaigns.get(campaign)
    topic = topic_header(state["story"]["id"])
    times = [m.received_at for m in sim.messages(origin=origin) if m.topic == topic]
    return max(times) - state["started_at"]


def delivered_once(sim, subscriptions: list[dict], origin: int, story_id: str = STORY["id"]) -> None:
    """Every one of `subscriptions` got the story exactly once."""
    topic = topic_header(story_id)
    received = Counter(m.token for m in sim.messages(origin=origin) if m.topic == topic)
    tokens = [s["endpoint"].rsplit("/", 1)[1] for s in subscriptions]
    assert [t for t in tokens if received[t] != 1] == [], "not exactly once"


def healthy_alone(stack, store, sim, webhook_secret, story_id: str) -> float:
    """The same healthy subscribers, with no bad origin beside them (topic "sport")."""
    campaign = publish(stack.base, webhook_secret, {**STORY, "id": story_id, "topics": ["sport"]})
    wait_for(lambda: store.campaigns.get(campaign)["state"] == "done", 60, "the healthy-only campaign")
    return finished_after(store, sim, campaign, 0)


def test_a_hanging_origin_slows_only_its_own_subscribers_and_loses_none(stack2, sim2, vapid_key, webhook_secret, store):
    """One origin never answers; its subscribers sit in every batch beside 5× as many on a
    healthy one. The healthy ones finish about as fast as alone; the hung ones go to a
    delayed retry once the circuit opens, and all arrive, once, when the origin recovers."""
    good, poor = store_mixed(store, sim2, vapid_key, 2500, 500)
    sim2.hang(1)
    stack2.start_worker()
    campaign = publish(stack2.base, webhook_secret, STORY)
    wait_for(lambda: sim2.stats(origin=0)["delivered"] >= len(good), 60, "every healthy push")
    beside = finished_after(store, sim2, campaign, 0)
    alone = healthy_alone(stack2, store, sim2, webhook_secret, "alone-hang")
    print(f"\nhealthy origin: {alone:.2f}s alone, {beside:.2f}s beside a hanging one")
    assert beside <= max(3 * alone, alone + 3)
    # the hung origin's pushes wait for a probe, not in the batch: the campaign is still sending
    wait_for(lambda: store.campaigns.get(campaign)["retrying"] > 0, 30, "the hung pushes to be deferred")
    lanes = {row["origin"]: row for row in store.metrics.lanes()}
    assert lanes[sim2.authorities[1]]["states"].get("circuit_open") == 1
    sim2.hang(1, on=False)
    wait_for(lambda: store.campaigns.get(campaign)["state"] == "done", 120, "the recovered origin's pushes", 1)
    delivered_once(sim2, poor, 1)
    state = store.campaigns.get(campaign)
    assert (state["sent"], state["failed"], state["retrying"]) == (3000, 0, 0)
    assert store.subscriptions.count() == 3000  # timeouts never delete anyone


def test_a_throttling_origin_gets_everyone_once_with_few_429s(stack2, sim2, vapid_key, webhook_secret, store):
    """One origin takes 40 pushes a second and answers 429 + Retry-After: 1 beyond. Its lane
    paces itself: every subscriber gets the story once, far fewer 429s than pushes, no
    attempt lost to throttling, and the healthy origin is not held back."""
    good, poor = store_mixed(store, sim2, vapid_key, 2500, 400)
    sim2.rate_limit(1, 40, retry_after="1")
    stack2.start_worker()
    campaign = publish(stack2.base, webhook_secret, STORY)
    wait_for(lambda: sim2.stats(origin=0)["delivered"] >= len(good), 60, "every healthy push")
    beside = finished_after(store, sim2, campaign, 0)
    wait_for(lambda: store.campaigns.get(campaign)["state"] == "done", 120, "the throttled origin's pushes", 1)
    throttled = sim2.stats(origin=1)["throttled"]
    alone = healthy_alone(stack2, store, sim2, webhook_secret, "alone-throttle")
    print(f"\nhealthy origin: {alone:.2f}s alone, {beside:.2f}s beside; throttled origin: {throttled} × 429 for 400")
    assert beside <= max(3 * alone, alone + 3)
    delivered_once(sim2, poor, 1)
    delivered_once(sim2, good, 0)
    assert throttled < 0.5 * len(poor)
    state = store.campaigns.get(campaign)
    assert (state["sent"], state["failed"], state["retrying"]) == (2900, 0, 0)
    assert state["errors"] == {}


def test_an_origin_whose_answers_end_with_the_connection_gets_everyone_once(
    stack2, sim2, vapid_key, webhook_secret, store
):
    """RFC 9112 §6.3: an answer without Content-Length ends when the connection closes. Each
    push to that origin is settled by its status (and needs a new connection): none is
    retried into a duplicate, none fails."""
    good, odd = store_mixed(store, sim2, vapid_key, 1500, 500)
    sim2.framing(1, "close")
    stack2.start_worker()
    campaign = publish(stack2.base, webhook_secret, STORY)
    wait_for(lambda: store.campaigns.get(campaign)["state"] == "done", 60, "the campaign")
    delivered_once(sim2, odd, 1)
    delivered_once(sim2, good, 0)
    assert sim2.stats(origin=1)["requests"] == len(odd)
    state = store.campaigns.get(campaign)
    assert (state["sent"], state["failed"], state["retrying"]) == (2000, 0, 0)


def test_a_slow_origin_cannot_keep_the_slots_a_healthy_one_waits_for(
    fanout_settings, sim2, vapid_key, webhook_secret, store, tmp_path
):
    """One origin answers every push, but only after 1.5 s, and has more pushes waiting than
    the worker's whole ceiling (40 here): it fills the ceiling at once and keeps each slot
    it gets for 1.5 s. The healthy origin beside it still gets its fair share of the slots
    (and pushes to fill them) and finishes about as fast as alone; nobody is lost."""
    good, poor = store_mixed(store, sim2, vapid_key, 1500, 500)
    with multi_origin_stack(fanout_settings, sim2, tmp_path, 40) as stack:
        stack.start_web()
        stack.start_worker()
        # Both lanes have answered before (a campaign at full speed), so the slow one may
        # take up to its limit at once when the next campaign starts.
        warm_up = publish(stack.base, webhook_secret, {**STORY, "id": "warm-up"})
        wait_for(lambda: store.campaigns.get(warm_up)["state"] == "done", 60, "the warm-up campaign")
        sim2.reset()  # its records; the subscribers stay
        sim2.set_latency(1500, origin=1)
        campaign = publish(stack.base, webhook_secret, STORY)
        wait_for(lambda: sim2.stats(origin=0)["delivered"] >= len(good), 120, "every healthy push")
        beside = finished_after(store, sim2, campaign, 0)
        wait_for(lambda: store.campaigns.get(campaign)["state"] == "done", 120, "the slow origin's pushes", 1)
        alone = healthy_alone(stack, store, sim2, webhook_secret, "alone-slow")
    print(f"\nhealthy origin: {alone:.2f}s alone, {beside:.2f}s beside one that answers in 1.5 s")
    assert beside <= max(3 * alone, alone + 3)
    delivered_once(sim2, poor, 1)
    delivered_once(sim2, good, 0)
    state = store.campaigns.get(campaign)
    assert (state["sent"], state["failed"], state["retrying"]) == (2000, 0, 0)


def test_a_refusing_origin_opens_its_circuit_and_one_probe_reopens_it(stack2, sim2, vapid_key, webhook_secret, store):
    """An origin whose port refuses connections: after a few failures its lane's circuit
    opens and its pushes go to a delayed retry with no more connects; once it listens again
    a probe closes the circuit and everyone gets the story once."""
    good, poor = store_mixed(store, sim2, vapid_key, 500, 100)
    sim2.refuse_connections(1)
    stack2.start_worker()
    campaign = publish(stack2.base, webhook_secret, STORY)
    wait_for(lambda: sim2.stats(origin=0)["delivered"] >= len(good), 60, "every healthy push")
    wait_for(lambda: store.campaigns.get(campaign)["retrying"] == len(poor), 30, "the refused pushes to wait")
    wait_for(lambda: store.metrics.lane_events().get(("circuit_opened", sim2.authorities[1])), 5, "the report")
    events = store.metrics.lane_events()
    assert events[("circuit_opened", sim2.authorities[1])] == 1
    assert events[("unreachable", sim2.authorities[1])] <= 10  # a few connects, not one per push
    sim2.refuse_connections(1, on=False)
    wait_for(lambda: store.campaigns.get(campaign)["state"] == "done", 120, "the probe and the rest", 1)
    delivered_once(sim2, poor, 1)
    assert store.campaigns.get(campaign)["sent"] == 600 and store.subscriptions.count() == 600


@pytest.mark.parametrize("spread", [0.0, 0.5])
def test_a_lane_grows_past_the_old_fixed_window_when_answers_are_slow(
    stack, stack_env, sim, vapid_key, webhook_secret, store, spread
):
    """At 300 ms per answer a fixed 200 in flight caps any sender at 667 pushes/s (Little's
    law); the lane's limit grows while answers stay fast and the core has room. Also when
    the answers are spread out as real push services' are (σ 0.5: a tenth of them slower
    than 570 ms), where lanes judging answer by answer stayed near 100 in flight."""
    n, latency = 4000, 0.3
    stack_env.update(STORYPUSH_BATCH_SIZE="500")
    stack.start_web()
    store_all(store, sim.mint(n, vapid_key.public_bytes))
    sim.set_latency(latency * 1000, spread=spread)
    stack.start_worker()
    campaign = publish(stack.base, webhook_secret, STORY)
    state, rate, peak = follow(store, campaign)
    print(f"\n{latency * 1000:.0f} ms answers (σ {spread}): {rate:,.0f} pushes/s, the lane's limit peaked at {peak}")
    assert state["sent"] == n and sim.stats()["delivered"] == n
    assert peak > 200 and rate > 200 / latency


def test_four_bad_origins_at_once_hold_back_neither_the_healthy_one_nor_each_other(
    fanout_settings, vapid_key, webhook_secret, store, tmp_path, monkeypatch
):
    """Beside a healthy origin, at the same time: one that never answers, one throttling as
    Mozilla autopush does (503 + Retry-After in seconds), one as WNS does (406 + Retry-After
    as an HTTP date) and one answering every push after 1.5 s. The healthy subscribers
    finish about as fast as alone; once the hung origin recovers, every subscriber of every
    origin has the story exactly once, nobody failed, nobody was deleted."""
    with PushSimulator(origins=5, verify="sample:4") as sim:
        monkeypatch.setenv("SSL_CERT_FILE", sim.ca_file)
        key = vapid_key.public_bytes
        healthy = sim.mint(2000, key)
        bad = {origin: sim.mint(200, key, origin=origin) for origin in (1, 2, 3, 4)}
        for i in range(200):  # every batch holds every origin
            store_all(store, healthy[i * 10 : (i + 1) * 10], ("animals", "sport"))
            store_all(store, [bad[origin][i] for origin in bad], ("animals",))
        sim.hang(1)
        sim.rate_limit(2, 40, retry_after="1", status=503)
        sim.rate_limit(4, 40, retry_after="date", status=406)
        sim.set_latency(1500, origin=3)
        with multi_origin_stack(fanout_settings, sim, tmp_path, 200) as stack:
            stack.start_web()
            stack.start_worker()
            campaign = publish(stack.base, webhook_secret, STORY)
            wait_for(lambda: sim.stats(origin=0)["delivered"] >= len(healthy), 60, "every healthy push")
            beside = finished_after(store, sim, campaign, 0)
            wait_for(lambda: store.campaigns.get(campaign)["retrying"] > 0, 30, "the hung pushes to be deferred")
            sim.hang(1, on=False)
            wait_for(lambda: store.campaigns.get(campaign)["state"] == "done", 150, "every bad origin's pushes", 1)
            alone = healthy_alone(stack, store, sim, webhook_secret, "alone-four")
        print(f"\nhealthy origin: {alone:.2f}s alone, {beside:.2f}s beside four bad ones")
        assert beside <= max(3 * alone, alone + 3)
        delivered_once(sim, healthy, 0)
        for origin, subscriptions in bad.items():
            delivered_once(sim, subscriptions, origin)
        throttled = [sim.stats(origin=origin)["throttled"] for origin in (2, 4)]
        assert all(count < 0.5 * 200 for count in throttled), throttled
    state = store.campaigns.get(campaign)
    assert (state["sent"], state["failed"], state["retrying"]) == (2800, 0, 0)
    assert store.subscriptions.count() == 2800

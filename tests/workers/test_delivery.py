"""HttpSender against real HTTPS simulators: outcomes, throttling per origin, timeouts."""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.pushsim import PushSimulator
from service.subscriptions import Subscription
from service.vapid import b64url_decode
from tests.helpers import TEST_SUBJECT
from workers.delivery import HttpSender, Outcome
from workers.message import PushHeaders
from workers.runtime import Runtime, set_runtime
from workers.webpush import VapidHeaders

HEADERS = PushHeaders(ttl=60, urgency="high", topic="A" * 32)


def _subscription(data: dict) -> Subscription:
    keys = data["keys"]
    return Subscription(data["endpoint"], b64url_decode(keys["p256dh"]), b64url_decode(keys["auth"]))


def _allow(settings, *simulators) -> None:
    """Install a worker runtime whose STORYPUSH_PUSH_HOSTS lists `simulators` (the sender checks them)."""
    hosts = tuple(s.origin.removeprefix("https://") for s in simulators)
    set_runtime(Runtime(settings.with_overrides(push_hosts=hosts)))


@pytest.fixture
def sender(sim, vapid_key, settings):
    _allow(settings, sim)
    sender = HttpSender(VapidHeaders(vapid_key.private_key, TEST_SUBJECT), max_in_flight=10, read_timeout=2)
    yield sender
    sender.close()
    set_runtime(None)


def _run(coro):
    return asyncio.new_event_loop().run_until_complete(coro)


def test_a_throttled_origin_is_held_back_and_others_are_not(sim, sender, vapid_key, settings):
    with PushSimulator() as other:
        _allow(settings, sim, other)
        throttled = [_subscription(s) for s in sim.mint(2, vapid_key.public_bytes)]
        fine = _subscription(other.mint(1, vapid_key.public_bytes)[0])
        sim.fail(throttled[0].endpoint, [429], retry_after="120")

        async def scenario():
            first = await sender.send(throttled[0], b'{"v":1}', HEADERS)
            held = await sender.send(throttled[1], b'{"v":1}', HEADERS)
            elsewhere = await sender.send(fine, b'{"v":1}', HEADERS)
            return first, held, elsewhere

        sender.ssl_context.load_verify_locations(other.ca_file)
        first, held, elsewhere = _run(scenario())
        assert (first.outcome, first.status, first.retry_after) == (Outcome.RETRY, 429, 120)
        assert held.outcome is Outcome.RETRY and held.reason == "throttled" and held.retry_after > 100
        assert len(sim.messages()) == 0 and sim.stats()["requests"] == 1  # nothing more sent to that origin
        assert elsewhere.outcome is Outcome.SENT
        assert other.messages()[0].json() == {"v": 1}


def test_timeouts_and_resets_are_retries(sim, sender, vapid_key):
    subs = [_subscription(s) for s in sim.mint(2, vapid_key.public_bytes)]
    sim.drop(subs[0].endpoint)

    async def scenario():
        reset = await sender.send(subs[0], b"{}", HEADERS)
        sim.set_latency(3000)
        slow = await sender.send(subs[1], b"{}", HEADERS)
        return reset, slow

    reset, slow = _run(scenario())
    assert (reset.outcome, reset.reason) == (Outcome.RETRY, "connection_reset")
    assert (slow.outcome, slow.reason) == (Outcome.RETRY, "timeout")


def test_connections_are_kept_alive_and_vapid_signed_once(sim, sender, vapid_key):
    subs = [_subscription(s) for s in sim.mint(30, vapid_key.public_bytes)]

    async def scenario():
        return await asyncio.gather(*(sender.send(s, b"{}", HEADERS) for s in subs))

    results = _run(scenario())
    assert all(r.outcome is Outcome.SENT for r in results)
    assert sender.vapid.signatures == 1
    origin = next(iter(sender._origins.values()))
    assert 1 <= len(origin.idle) <= 10  # at most max_in_flight connections, all kept for reuse

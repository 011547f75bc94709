"""HttpSender against real HTTPS simulators: outcomes, lanes per origin, throttles, circuits."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time

import pytest
import uvloop

from benchmarks.pushsim import PushSimulator
from benchmarks.pushsim.client import token_of
from service.retry_after import MAX_RETRY_AFTER
from service.subscriptions import Subscription
from service.vapid import b64url_decode
from tests.helpers import TEST_SUBJECT, BrowserKeys
from workers.delivery import (
    DEVICE_THROTTLE_DELAY,
    HttpSender,
    Outcome,
    _network_reason,
    about_one_subscription,
    classify,
)
from workers.http1 import SESSION_REFRESH, ResumingContext, default_ssl_context
from workers.lanes import LanePolicy, LaneState, Signal
from workers.message import PushHeaders
from workers.webpush import VapidHeaders

HEADERS = PushHeaders(ttl=60, urgency="high", topic="A" * 32)


def _subscription(data: dict) -> Subscription:
    keys = data["keys"]
    return Subscription(data["endpoint"], b64url_decode(keys["p256dh"]), b64url_decode(keys["auth"]))


def _sender(vapid_key, hosts, **policy) -> HttpSender:
    vapid = VapidHeaders(vapid_key.private_key, TEST_SUBJECT)
    return HttpSender(vapid, LanePolicy(**policy), push_hosts=tuple(hosts), read_timeout=2)


@pytest.fixture
def sender(sim, vapid_key):
    sender = _sender(vapid_key, [sim.origin.removeprefix("https://")], ceiling=10)
    yield sender
    sender.close()


def _idle(sender: HttpSender) -> list:
    """The idle connections of a sender that has one origin."""
    [pool] = sender._pools.values()
    return pool.idle


def _run(coro):
    return asyncio.new_event_loop().run_until_complete(coro)


def test_a_long_throttle_defers_that_origin_only_and_costs_no_attempt(sim, vapid_key):
    with PushSimulator() as other:
        hosts = [sim.origin.removeprefix("https://"), other.origin.removeprefix("https://")]
        sender = _sender(vapid_key, hosts)
        sender.ssl_context.load_verify_locations(other.ca_file)
        throttled = [_subscription(s) for s in sim.mint(2, vapid_key.public_bytes)]
        fine = _subscription(other.mint(1, vapid_key.public_bytes)[0])
        sim.fail(throttled[0].endpoint, [429], retry_after="120")

        async def scenario():
            first = await sender.send(throttled[0], b'{"v":1}', HEADERS)
            held = await sender.send(throttled[1], b'{"v":1}', HEADERS)
            elsewhere = await sender.send(fine, b'{"v":1}', HEADERS)
            return first, held, elsewhere

        first, held, elsewhere = _run(scenario())
        sender.close()
        for result in (first, held):
            assert (result.outcome, result.reason, result.attempted) == (Outcome.RETRY, "throttled", False)
            assert 110 < result.retry_after <= 120
        assert len(sim.messages()) == 0 and sim.stats()["requests"] == 1  # nothing more sent to that origin
        assert elsewhere.outcome is Outcome.SENT
        assert other.messages()[0].json() == {"v": 1}


@pytest.mark.parametrize(
    "said",
    [{}, {"headers": {"X-WNS-Status": "channelthrottled"}}, {"reason": "TooManyRequests"}],
    ids=["bare", "wns-channel", "apple-device"],
)
def test_a_short_throttle_is_waited_out_in_the_lane_and_sent_once(sim, sender, vapid_key, said):
    """With a Retry-After the push service paces the sender, whatever else it says."""
    subscription = _subscription(sim.mint(1, vapid_key.public_bytes)[0])
    sim.fail(subscription.endpoint, [429], retry_after="1", **said)
    began = time.monotonic()
    result = _run(sender.send(subscription, b"{}", HEADERS))
    assert result.outcome is Outcome.SENT and time.monotonic() - began >= 0.9
    assert len(sim.messages()) == 1 and [r["status"] for r in sim.rejections()] == [429]


def test_timeouts_and_resets_are_attempts(sim, sender, vapid_key):
    subs = [_subscription(s) for s in sim.mint(2, vapid_key.public_bytes)]
    sim.drop(subs[0].endpoint)

    async def scenario():
        reset = await sender.send(subs[0], b"{}", HEADERS)
        sim.set_latency(3000)
        slow = await sender.send(subs[1], b"{}", HEADERS)
        return reset, slow

    reset, slow = _run(scenario())
    assert (reset.outcome, reset.reason, reset.attempted) == (Outcome.RETRY, "connection_reset", True)
    assert (slow.outcome, slow.reason, slow.attempted) == (Outcome.RETRY, "timeout", True)
    assert not reset.refusal and not slow.refusal


def test_refused_connects_open_the_circuit_and_later_pushes_wait_for_a_probe(vapid_key):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sender = _sender(vapid_key, [f"127.0.0.1:{port}"], failure_threshold=3, open_for=30)
    keys = BrowserKeys.generate()
    subscription = Subscription(f"https://127.0.0.1:{port}/push/x", keys.p256dh, keys.auth)

    async def scenario():
        return [await sender.send(subscription, b"{}", HEADERS) for _ in range(5)]

    results = _run(scenario())
    assert [r.reason for r in results] == ["connect_refused"] * 3 + ["circuit_open"] * 2
    assert all(r.attempted for r in results[:3]) and not any(r.attempted for r in results[3:])
    assert 25 < results[-1].retry_after <= 30
    [lane] = list(sender.lanes)
    assert lane.state(sender.lanes.clock()) is LaneState.CIRCUIT_OPEN
    assert sender.lanes.take_events()[(f"127.0.0.1:{port}", "circuit_opened")] == 1


def test_connections_are_kept_alive_and_vapid_signed_once(sim, sender, vapid_key):
    subs = [_subscription(s) for s in sim.mint(30, vapid_key.public_bytes)]

    async def scenario():
        return await asyncio.gather(*(sender.send(s, b"{}", HEADERS) for s in subs))

    results = _run(scenario())
    assert all(r.outcome is Outcome.SENT for r in results)
    assert sender.vapid.signatures == 1
    [pool] = sender._pools.values()
    [lane] = list(sender.lanes)
    assert 1 <= len(pool.idle) <= lane.limit  # kept for reuse, never more than the lane's limit


def _resumed(pool) -> list[bool]:
    return [c.transport.get_extra_info("ssl_object").session_reused for c in pool.idle]


def test_new_connections_resume_the_tls_session_an_earlier_one_to_that_host_was_given(sim, vapid_key):
    sender = _sender(vapid_key, [sim.origin.removeprefix("https://")], initial_limit=40, first_contact=1)
    subs = [_subscription(s) for s in sim.mint(41, vapid_key.public_bytes)]
    sim.set_latency(100)  # the 40 after the first are all in flight at once: 40 connections

    async def scenario():
        first = await sender.send(subs[0], b"{}", HEADERS)  # a full handshake; its answer brings a ticket
        return [first, *await asyncio.gather(*(sender.send(s, b"{}", HEADERS) for s in subs[1:]))]

    results = _run(scenario())
    [pool] = sender._pools.values()
    resumed = _resumed(pool)
    sender.close()
    assert [r.outcome for r in results] == [Outcome.SENT] * 41
    assert len(resumed) >= 40 and resumed.count(False) == 1  # only the first one's was a full handshake
    assert len(sim.messages()) == 41


def test_a_tls_session_is_offered_only_to_the_host_name_it_was_made_with(sim, vapid_key):
    """The simulator's certificate names both 127.0.0.1 and localhost: the same server, but a
    session made with one name must not stand in for checking the certificate for another."""
    port = sim.origin.rsplit(":", 1)[1]
    sender = _sender(vapid_key, [f"127.0.0.1:{port}", f"localhost:{port}"])
    [data] = sim.mint(1, vapid_key.public_bytes)
    by_ip = _subscription(data)
    by_name = Subscription(by_ip.endpoint.replace("127.0.0.1", "localhost"), by_ip.p256dh, by_ip.auth)

    results, resumed = [], []
    for sub in (by_ip, by_ip, by_name, by_name):  # each on a new connection
        results.append(_run(sender.send(sub, b"{}", HEADERS)))
        [pool] = [sender._pools[origin] for origin in sender._pools if sub.endpoint.startswith(origin + "/")]
        resumed += _resumed(pool)
        pool.close()
    sender.close()
    # (Answered, all four: as localhost the simulator refuses the VAPID audience with a 401.)
    assert [r.status for r in results] == [201, 201, 401, 401]
    assert resumed == [False, True, False, True]
    assert set(sender.ssl_context.sessions) == {"127.0.0.1", "localhost"}


class _Session:
    has_ticket = True


class _Transport:
    """Just what `ResumingContext.remember` reads of a transport, counting the reads."""

    def __init__(self):
        self.reads = 0

    def get_extra_info(self, name):
        assert name == "ssl_object"
        self.reads += 1
        return type("SSLObject", (), {"session": _Session()})()


def test_tickets_are_kept_for_the_most_recent_hosts_and_read_once_a_refresh_period():
    context = ResumingContext(max_hosts=2)
    transport = _Transport()
    context.remember("a.example", transport, now=0.0)
    context.remember("a.example", transport, now=SESSION_REFRESH - 1)  # not read again yet
    assert transport.reads == 1
    context.remember("a.example", transport, now=SESSION_REFRESH)
    assert transport.reads == 2
    context.remember("b.example", transport, now=SESSION_REFRESH)
    context.remember("c.example", transport, now=SESSION_REFRESH)
    assert list(context.sessions) == ["b.example", "c.example"]


def test_a_push_is_settled_with_when_its_slot_was_taken_as_well_as_when_it_was_written(sim, sender, vapid_key):
    """(A throttle's congestion window is told by the first: see `Lanes.settle`.)"""
    sub = _subscription(sim.mint(1, vapid_key.public_bytes)[0])
    settled = []
    real = sender.lanes.settle

    def spy(lane, signal, **kwargs):
        settled.append(kwargs)
        real(lane, signal, **kwargs)

    sender.lanes.settle = spy
    assert _run(sender.send(sub, b"{}", HEADERS)).outcome is Outcome.SENT
    [kwargs] = settled
    assert 0 < kwargs["admitted_at"] < kwargs["sent_at"]  # its connection was opened in between


def test_a_push_service_whose_certificate_we_do_not_trust_gets_nothing(sim, vapid_key):
    with PushSimulator() as stranger:  # its own CA, which SSL_CERT_FILE does not name
        sender = _sender(vapid_key, [stranger.origin.removeprefix("https://")])
        sub = _subscription(stranger.mint(1, vapid_key.public_bytes)[0])
        result = _run(sender.send(sub, b"{}", HEADERS))
        sender.close()
        assert (result.outcome, result.reason) == (Outcome.RETRY, "tls_error")
        assert stranger.messages() == []


def test_the_sender_checks_certificates_as_the_standard_library_s_default_context_does():
    ours, theirs = default_ssl_context(), ssl.create_default_context()
    assert (ours.verify_mode, ours.check_hostname, ours.verify_flags) == (
        theirs.verify_mode,
        theirs.check_hostname,
        theirs.verify_flags,
    )
    assert (ours.protocol, ours.options, ours.minimum_version) == (
        theirs.protocol,
        theirs.options,
        theirs.minimum_version,
    )
    assert ours.cert_store_stats() == theirs.cert_store_stats()


def _bug_once(real):
    """`real`, but its first call raises, as a bug of ours would."""
    calls = []

    def buggy(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return real(*args, **kwargs)

    return buggy


@pytest.mark.parametrize(
    ("broken", "status", "outcome", "reason", "sent"),
    [
        ("classify", None, Outcome.SENT, "sent", 1),  # the push service took it: not sent again
        ("classify", 500, Outcome.RETRY, "internal_error", 0),
        ("encrypt", None, Outcome.RETRY, "internal_error", 0),  # never written
    ],
)
def test_a_bug_of_ours_settles_its_push_and_gives_its_slot_back(
    sim, vapid_key, monkeypatch, caplog, broken, status, outcome, reason, sent
):
    """A bug while starting a push or settling its answer must not keep its lane's slot
    (the pushes behind it would wait) nor its result (its batch would wait for the job's
    deadline): the push is settled at once and logged."""
    import workers.delivery

    monkeypatch.setattr(workers.delivery, broken, _bug_once(getattr(workers.delivery, broken)))
    sender = _sender(vapid_key, [sim.origin.removeprefix("https://")], initial_limit=1, first_contact=1, ceiling=1)
    first, second = (_subscription(s) for s in sim.mint(2, vapid_key.public_bytes))
    if status is not None:
        sim.fail(first.endpoint, [status])

    async def scenario():
        return await asyncio.wait_for(
            asyncio.gather(sender.send(first, b"{}", HEADERS), sender.send(second, b"{}", HEADERS)), 5
        )

    results = _run(scenario())
    sender.close()
    assert [(r.outcome, r.reason) for r in results] == [(outcome, reason), (Outcome.SENT, "sent")]
    assert sorted(m.token for m in sim.messages()) == sorted(
        [token_of(first.endpoint)] * sent + [token_of(second.endpoint)]
    )
    assert sender.lanes.in_flight == 0 and [lane.in_flight for lane in sender.lanes] == [0]
    assert "RuntimeError: a bug" in caplog.text


class Batch:
    """An owner of pushes, as a `BatchRun` is."""


def test_withdrawn_pushes_waiting_for_a_slot_send_nothing_and_one_on_the_wire_completes(sim, vapid_key):
    sender = _sender(vapid_key, [sim.origin.removeprefix("https://")], initial_limit=1, ceiling=1)
    subs = [_subscription(s) for s in sim.mint(3, vapid_key.public_bytes)]
    sim.set_latency(500)
    batch, other = Batch(), Batch()

    async def scenario():
        on_wire = asyncio.ensure_future(sender.send(subs[0], b"{}", HEADERS, owner=batch))
        waiting = asyncio.ensure_future(sender.send(subs[1], b"{}", HEADERS, owner=batch))
        someone_elses = asyncio.ensure_future(sender.send(subs[2], b"{}", HEADERS, owner=other))
        await asyncio.sleep(0.2)
        sender.withdraw(batch)
        late = await sender.send(subs[2], b"{}", HEADERS, owner=batch)  # after the withdrawal: at once
        return await asyncio.gather(on_wire, waiting, someone_elses), late

    (on_wire, waiting, someone_elses), late = _run(scenario())
    sender.close()
    assert on_wire.outcome is Outcome.SENT  # completed, so its outcome is recorded
    for result in (waiting, late):
        assert (result.outcome, result.reason, result.attempted) == (Outcome.RETRY, "withdrawn", False)
    assert someone_elses.outcome is Outcome.SENT  # another batch's push is not touched
    tokens = sorted(m.token for m in sim.messages())
    assert tokens == sorted(s.endpoint.rsplit("/", 1)[1] for s in (subs[0], subs[2]))
    assert sender.lanes.in_flight == 0


def test_answers_map_to_outcomes_and_lane_signals():
    assert classify(201, None, 0) == (classify(201, None, 0)[0], Signal.FAST)
    throttled, signal = classify(429, "7", 0)
    assert (throttled.outcome, throttled.attempted, throttled.retry_after, signal) == (
        Outcome.RETRY,
        False,
        7.0,
        Signal.THROTTLED,
    )
    backoff, signal = classify(503, "120", 0)  # Mozilla autopush's "back off"
    assert (backoff.attempted, signal) == (False, Signal.THROTTLED)
    unavailable, signal = classify(503, None, 0)
    assert (unavailable.attempted, signal) == (True, Signal.OVERLOADED)
    assert classify(406, None, 0)[1] is Signal.THROTTLED  # WNS
    assert classify(403, None, 0)[0].refusal and not classify(413, None, 0)[0].refusal  # 413 is our bug
    assert classify(500, None, 0) == (classify(500, None, 0)[0], Signal.ANSWERED)


def test_a_host_that_does_not_exist_counts_against_its_subscription_only_while_others_connect(sim, sender):
    lane = sender.lanes.lane("https://gone.notify.windows.com", "wns")
    nxdomain = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert _network_reason(nxdomain) == "dns_no_such_host"
    assert _network_reason(socket.gaierror(socket.EAI_AGAIN, "Temporary failure")) == "dns_error"
    assert _network_reason(ssl.SSLCertVerificationError("hostname mismatch")) == "tls_wrong_host"
    assert not sender._unreachable(nxdomain, lane, connecting=True).refusal  # nothing connected yet: our DNS?
    sender._connected_at = sender.lanes.clock()
    junk = sender._unreachable(nxdomain, lane, connecting=True)
    assert (junk.outcome, junk.reason, junk.refusal) == (Outcome.FAILED, "dns_no_such_host", True)
    lane.reached = True  # a host that answered before: an outage, not junk
    assert sender._unreachable(nxdomain, lane, connecting=True).outcome is Outcome.RETRY


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (201, Outcome.SENT),
        (202, Outcome.SENT),
        (404, Outcome.EXPIRED),
        (410, Outcome.EXPIRED),
        (429, Outcome.RETRY),
        (503, Outcome.RETRY),
        (406, Outcome.RETRY),
        (500, Outcome.RETRY),
        (502, Outcome.RETRY),
        (301, Outcome.FAILED),
        (400, Outcome.FAILED),
        (401, Outcome.FAILED),
        (403, Outcome.FAILED),
        (413, Outcome.FAILED),
    ],
)
def test_classify(status, outcome):
    result, _ = classify(status, None, 0.0)
    assert result.outcome is outcome
    assert result.status == status


def test_a_throttle_carries_its_retry_after():
    assert classify(429, "30", 0)[0].retry_after == 30
    assert classify(429, "9" * 400, 0)[0].retry_after == MAX_RETRY_AFTER


def test_a_throttle_about_one_subscription_is_not_yet_for_it_and_nothing_for_its_lane():
    assert about_one_subscription("channelthrottled", b"")  # WNS
    assert about_one_subscription(" ChannelThrottled ", b"")
    assert about_one_subscription(None, b'{"reason": "TooManyRequests", "timestamp": 1}')  # Apple
    for body in (b'{"reason": "TooManyProviderTokenUpdates"}', b'{"reason": "TooManyRequests"', b"TooManyRequests",
                 b'["TooManyRequests"]', b"", b"\xff\xfe"):  # fmt: skip
        assert not about_one_subscription("received", body), body
    result, signal = classify(429, None, 0, origin="apple", one_subscription=True)
    assert signal is Signal.DEVICE_THROTTLED
    assert (result.outcome, result.reason, result.attempted) == (Outcome.RETRY, "device_throttled", False)
    assert result.retry_after == DEVICE_THROTTLE_DELAY
    paced, signal = classify(406, "30", 0, one_subscription=True)  # a Retry-After: the service paces us
    assert paced.retry_after == 30 and signal is Signal.THROTTLED
    assert classify(500, None, 0, one_subscription=True)[1] is Signal.ANSWERED  # only throttles are


@pytest.mark.parametrize(
    ("status", "said"),
    [
        (429, {"reason": "TooManyRequests"}),  # Apple: too many requests for the same device token
        (406, {"headers": {"X-WNS-Status": "channelthrottled"}}),  # WNS: this channel is throttled
        (429, {}),  # any push service: the same push throttled again right after its lane's pause
    ],
)
def test_a_device_over_its_quota_holds_back_no_other_subscriber_of_its_push_service(sim, vapid_key, status, said):
    """Measured before: one subscription answered 429 every time, among 6,000 of one push
    service, kept its lane paused, and 200 of the others still waited after 90 s."""
    sender = _sender(vapid_key, [sim.origin.removeprefix("https://")], ceiling=10, initial_limit=1, first_contact=1)
    over, *others = [_subscription(s) for s in sim.mint(6, vapid_key.public_bytes)]
    sim.fail(over.endpoint, status, always=True, **said)

    async def scenario():
        began = time.monotonic()
        first = asyncio.ensure_future(sender.send(over, b"{}", HEADERS))  # first in line, limit 1
        rest = await asyncio.gather(*(sender.send(s, b"{}", HEADERS) for s in others))
        return await first, rest, time.monotonic() - began

    throttled, rest, took = _run(scenario())
    events = sender.lanes.take_events()
    sender.close()
    assert (throttled.outcome, throttled.reason, throttled.attempted) == (Outcome.RETRY, "device_throttled", False)
    assert throttled.retry_after == DEVICE_THROTTLE_DELAY
    assert [r.outcome for r in rest] == [Outcome.SENT] * 5 and len(sim.messages()) == 5
    asked = len(sim.rejections())
    assert asked == (2 if not said else 1)  # an unknown push service's 429 is tried once more
    assert took < 1.0  # no pause: the others went out one after another at once
    assert events[(sim.authorities[0], "device_throttled")] == 1


def test_a_retry_after_that_is_not_a_number_still_settles_the_push(sim, sender, vapid_key):
    """A push service's junk header must not leave the push unsettled (its batch would
    wait for it until the job's deadline)."""
    subscription = _subscription(sim.mint(1, vapid_key.public_bytes)[0])
    sim.fail(subscription.endpoint, [429], retry_after="²")

    async def within_a_while():
        return await asyncio.wait_for(sender.send(subscription, b"{}", HEADERS), 10)

    result = _run(within_a_while())  # a 429 without a usable Retry-After: the lane's default pause
    assert result.outcome is Outcome.SENT
    assert [r["status"] for r in sim.rejections()] == [429] and len(sim.messages()) == 1


def test_an_interim_1xx_answer_is_read_past_to_the_final_one(sim, sender, vapid_key):
    """RFC 9110 §15.2: a client must read past 1xx answers it did not ask for. The
    simulator's 103 carries a Retry-After: 3600 that belongs to no final answer."""
    subscriptions = [_subscription(s) for s in sim.mint(3, vapid_key.public_bytes)]
    sim.early_hints(0)
    sim.fail(subscriptions[1].endpoint, [410])
    sim.fail(subscriptions[2].endpoint, [429], retry_after="1")

    async def all_three():
        return await asyncio.gather(*(sender.send(s, b"{}", HEADERS) for s in subscriptions))

    sent, gone, throttled_then_sent = _run(asyncio.wait_for(all_three(), 10))
    assert (sent.outcome, sent.status) == (Outcome.SENT, 201)
    assert (gone.outcome, gone.status) == (Outcome.EXPIRED, 410)
    assert (throttled_then_sent.outcome, throttled_then_sent.status) == (Outcome.SENT, 201)
    assert sender.lanes.snapshots()[0].state is LaneState.OPEN  # the 103's Retry-After paused nothing
    assert len(sim.messages()) == 2


def test_an_unasked_101_is_a_bad_answer_not_a_refusal(sim, sender, vapid_key):
    subscription = _subscription(sim.mint(1, vapid_key.public_bytes)[0])
    sim.fail(subscription.endpoint, [101])
    result = _run(asyncio.wait_for(sender.send(subscription, b"{}", HEADERS), 5))
    assert (result.outcome, result.attempted, result.refusal) == (Outcome.RETRY, True, False)


@pytest.mark.parametrize("framing", ["close", "stall"])
def test_an_answer_whose_body_ends_with_the_connection_or_never_keeps_its_status(sim, sender, vapid_key, framing):
    """RFC 9112 §6.3: without Content-Length a body ends when the connection closes; a push
    service whose body stalls has still decided. Its status stands: retrying a delivered
    push would deliver it twice."""
    subscriptions = [_subscription(s) for s in sim.mint(3, vapid_key.public_bytes)]
    sim.framing(0, framing)
    sim.fail(subscriptions[2].endpoint, [410])

    async def all_three():
        return await asyncio.gather(*(sender.send(s, b"{}", HEADERS) for s in subscriptions))

    began = time.monotonic()
    results = _run(asyncio.wait_for(all_three(), 10))
    expected = [(Outcome.SENT, 201), (Outcome.SENT, 201), (Outcome.EXPIRED, 410)]
    assert [(r.outcome, r.status) for r in results] == expected
    assert sorted(m.token for m in sim.messages()) == sorted(s.endpoint.rsplit("/", 1)[1] for s in subscriptions[:2])
    assert sim.stats()["requests"] == 3
    if framing == "stall":  # its connection held until the read timeout (2 s here), then closed
        assert time.monotonic() - began >= 1.9
    else:
        assert time.monotonic() - began < 1.5


def test_an_answer_without_end_is_cut_off_early_not_kept_in_memory(sim, sender, vapid_key):
    """A hostile push service streams one header for ever: httptools would keep it all in
    memory until the read timeout. Past MAX_ANSWER_BYTES the answer is a bad one (retried)."""
    flooded, fine = (_subscription(s) for s in sim.mint(2, vapid_key.public_bytes))

    async def flood_then_fine():
        sim.framing(0, "flood")
        began = time.monotonic()
        result = await sender.send(flooded, b"{}", HEADERS)
        took = time.monotonic() - began
        sim.framing(0, None)
        return result, took, await sender.send(fine, b"{}", HEADERS)

    flood, took, after = _run(asyncio.wait_for(flood_then_fine(), 10))
    assert (flood.outcome, flood.attempted, flood.refusal) == (Outcome.RETRY, True, False)
    assert took < 1.0  # not the read timeout (2 s here)
    assert after.outcome is Outcome.SENT


def test_a_kept_alive_connection_the_push_service_had_closed_costs_no_attempt_and_opens_no_circuit(sim, vapid_key):
    """The keep-alive race: a push service closes an idle connection as our next request
    goes out on it (or closed it while the worker's loop was stopped between two jobs, and
    the close is seen only once the next job writes). The request fails with not a byte
    answered: it is sent once more on a new connection, as neither an attempt nor a sign
    that the origin is down. (Measured with a real worker: a campaign that found 1,200
    such connections took 30.9 s instead of 4.4 s, its lane's circuit opened.)"""
    sender = _sender(vapid_key, [sim.origin.removeprefix("https://")], ceiling=100)
    subscriptions = [_subscription(s) for s in sim.mint(40, vapid_key.public_bytes)]
    loop = uvloop.new_event_loop()  # as the worker runs its jobs

    async def send(batch):
        return await asyncio.gather(*(sender.send(s, b"{}", HEADERS) for s in batch))

    try:
        loop.run_until_complete(send(subscriptions[:20]))
        kept = len(_idle(sender))
        assert kept >= 4
        again = subscriptions[20 : 20 + kept]  # one per kept connection: each goes out on one
        for subscription in again:
            sim.drop(subscription.endpoint)  # its next request: the connection reset, no answer
        results = loop.run_until_complete(asyncio.wait_for(send(again), 10))
    finally:
        sender.close()
        loop.close()
    assert {(r.outcome, r.attempted) for r in results} == {(Outcome.SENT, True)}
    [lane] = sender.lanes.snapshots()
    assert lane.state is LaneState.OPEN  # 4 unreachable in a row would have opened its circuit
    assert sender.lanes.take_events()[(lane.origin, "unreachable")] == 0
    sent = subscriptions[: 20 + kept]
    assert sorted(m.token for m in sim.messages()) == sorted(s.endpoint.rsplit("/", 1)[1] for s in sent)
    assert len(sim.rejections()) == kept  # each dropped once, then sent on a new connection


def test_a_connection_idle_past_the_keepalive_limit_is_closed_not_used(sim, vapid_key, monkeypatch):
    monkeypatch.setattr("workers.http1.KEEPALIVE_IDLE", 0.3)
    sender = _sender(vapid_key, [sim.origin.removeprefix("https://")], ceiling=10)
    subscriptions = [_subscription(s) for s in sim.mint(6, vapid_key.public_bytes)]
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(sender.send(subscriptions[0], b"{}", HEADERS))
        [old] = _idle(sender)
        loop.run_until_complete(sender.send(subscriptions[1], b"{}", HEADERS))
        assert _idle(sender) == [old]  # reused while fresh
        time.sleep(0.4)
        result = loop.run_until_complete(sender.send(subscriptions[2], b"{}", HEADERS))
        [new] = _idle(sender)
    finally:
        sender.close()
        loop.close()
    assert result.outcome is Outcome.SENT
    assert new is not old and old.transport.is_closing()

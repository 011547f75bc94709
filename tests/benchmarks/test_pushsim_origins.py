"""The simulator's several push-service origins and the ways each misbehaves on its own.

One process serves every origin on its own port with one CA; an origin can hang,
rate-limit with Retry-After, refuse connections or fail every push, and the others (and
the control API) carry on. Real HTTPS throughout: requests for ordinary pushes, raw TLS
sockets where a test must see a connection that stays open, or none at all.
"""

from __future__ import annotations

import email.utils
import errno
import json
import os
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from py_vapid import Vapid02

from benchmarks.pushsim import PushSimulator, SimulatorError, token_of
from benchmarks.pushsim.crypto import SubscriberKeys
from tests.helpers.push_sender import encrypt, post_push

ORIGINS = 3
SUBJECT = "mailto:ops@publisher.example.org"
# RFC 9110 §5.6.7 IMF-fixdate, the only HTTP-date form a sender has to accept.
IMF_FIXDATE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
    r"\d{2}:\d{2}:\d{2} GMT"
)


@pytest.fixture(scope="module")
def sim() -> Iterator[PushSimulator]:
    with PushSimulator(origins=ORIGINS) as simulator:
        yield simulator


@pytest.fixture(autouse=True)
def _clean(sim: PushSimulator) -> None:
    sim.reset(subscribers=True)
    sim.set_latency(0)


def origin_of(endpoint: str) -> str:
    return endpoint.split("/push/", 1)[0]


def push_headers(vapid: Vapid02, aud: str) -> dict[str, str]:
    claims = {"aud": aud, "exp": int(time.time()) + 3600, "sub": SUBJECT}
    return {"TTL": "60", "Content-Encoding": "aes128gcm", **vapid.sign(claims)}


def post(
    sim: PushSimulator,
    endpoint: str,
    body: bytes,
    vapid: Vapid02,
    *,
    aud: str | None = None,
    session: requests.Session | None = None,
) -> requests.Response:
    """POST like a sender, with a JWT for the endpoint's own origin unless `aud` says otherwise."""
    return post_push(sim, endpoint, body, push_headers(vapid, aud or origin_of(endpoint)), session)


def on_origin(sim: PushSimulator, endpoint: str, origin: int) -> str:
    """The same token's endpoint on another origin's port."""
    return f"{sim.origins[origin]}/push/{token_of(endpoint)}"


def open_tls(sim: PushSimulator, origin: int, timeout: float = 5.0) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", sim.ports[origin]), timeout=timeout)
    return sim.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1")


def wire(sim: PushSimulator, endpoint: str, body: bytes, vapid: Vapid02) -> bytes:
    """A POST as raw HTTP/1.1 bytes, for tests that must hold the connection themselves."""
    origin = origin_of(endpoint)
    head = "".join(f"{name}: {value}\r\n" for name, value in push_headers(vapid, origin).items())
    target = endpoint[len(origin) :]
    host = origin.removeprefix("https://")
    return f"POST {target} HTTP/1.1\r\nHost: {host}\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def read_status(stream: ssl.SSLSocket) -> int:
    """Read one whole answer and return its status."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = stream.recv(65536)
        assert chunk, "connection closed before an answer"
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(rest) < length:
        rest += stream.recv(65536)
    return int(head[9:12])


def assert_no_answer(stream: ssl.SSLSocket, seconds: float) -> None:
    """Nothing comes back within `seconds`, and the connection is still open."""
    stream.settimeout(seconds)
    with pytest.raises(TimeoutError):
        stream.recv(65536)


def assert_closed(stream: ssl.SSLSocket) -> None:
    """The server closed the connection (Python's ssl reports a reset TLS peer as EOF, too)."""
    stream.settimeout(2)
    try:
        data = stream.recv(65536)
    except (ConnectionError, ssl.SSLError):
        return
    assert data == b""


def test_every_origin_has_its_own_port_and_one_ca(sim: PushSimulator) -> None:
    assert len(sim.origins) == len(sim.authorities) == len(set(sim.ports)) == ORIGINS
    assert sim.origins[0] == sim.origin and sim.ports[0] == sim.port
    assert sim.authorities == [f"127.0.0.1:{port}" for port in sim.ports]
    assert sim.origins == [f"https://{authority}" for authority in sim.authorities]
    for index in range(ORIGINS):
        with open_tls(sim, index) as stream:  # the one CA verifies every origin's certificate
            assert stream.version() is not None


def test_a_burst_of_connects_waits_in_the_listen_queue_while_the_simulator_is_busy(sim: PushSimulator) -> None:
    """A sender ramping up opens hundreds of connections within a round trip, while the
    simulator is busy with handshakes. The kernel holds them until it accepts (the listen
    backlog); a connect beyond it is dropped and retried by TCP a second later, which
    stalled a benchmark run. Here the simulator is stopped outright while 300 connect."""
    burst = 300
    sockets = [socket.socket() for _ in range(burst)]
    os.kill(sim.pid, signal.SIGSTOP)
    try:
        for sock in sockets:
            sock.setblocking(False)
            assert sock.connect_ex(("127.0.0.1", sim.port)) in (0, errno.EINPROGRESS)
        time.sleep(0.3)  # loopback handshakes take microseconds; a dropped one waits 1 s
        _, writable, _ = select.select([], sockets, [], 0)
        connected = sum(1 for s in writable if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0)
    finally:
        os.kill(sim.pid, signal.SIGCONT)
        for sock in sockets:
            sock.close()
    assert connected == burst, f"{connected} of {burst} connects completed while the simulator was busy"


def test_push_is_delivered_on_its_own_origin_only(sim: PushSimulator, vapid: Vapid02, server_key: bytes) -> None:
    [first] = sim.mint(1, server_key, origin=1)
    [second] = sim.mint(1, server_key, origin=sim.origins[2])  # an origin named by its URL

    assert origin_of(first["endpoint"]) == sim.origins[1]
    assert origin_of(second["endpoint"]) == sim.origins[2]
    assert post(sim, first["endpoint"], encrypt(first, b"one"), vapid).status_code == 201
    assert post(sim, second["endpoint"], encrypt(second, b"two"), vapid).status_code == 201
    # The same token on another origin's port (with that origin's aud) is unknown there.
    for other in (0, 2):
        assert post(sim, on_origin(sim, first["endpoint"], other), encrypt(first, b"x"), vapid).status_code == 404

    assert [(m.plaintext, m.origin) for m in sim.messages()] == [(b"one", sim.origins[1]), (b"two", sim.origins[2])]
    assert [m.plaintext for m in sim.messages(origin=1)] == [b"one"]
    assert [m.plaintext for m in sim.messages(first["endpoint"])] == [b"one"]
    assert sim.messages(origin=0) == []
    [refused] = sim.rejections(origin=0)
    assert (refused["origin"], refused["token"], refused["status"]) == (
        sim.origins[0],
        token_of(first["endpoint"]),
        404,
    )


def test_register_on_an_origin(sim: PushSimulator, vapid: Vapid02, server_key: bytes) -> None:
    [minted] = sim.mint(1, server_key)
    keys = SubscriberKeys.generate()
    registered = sim.register("own-token", keys.private_key, keys.auth, server_key, origin=2)

    assert registered["endpoint"] == f"{sim.origins[2]}/push/own-token"
    assert post(sim, registered["endpoint"], encrypt(registered, b"mine"), vapid).status_code == 201
    assert post(sim, on_origin(sim, registered["endpoint"], 0), encrypt(minted, b"x"), vapid).status_code == 404
    assert [m.origin for m in sim.messages("own-token")] == [sim.origins[2]]


def test_aud_must_be_the_subscriptions_own_origin(sim: PushSimulator, vapid: Vapid02, server_key: bytes) -> None:
    [subscription] = sim.mint(1, server_key, origin=1)
    body = encrypt(subscription, b"x")

    for aud in (sim.origins[0], sim.origins[2], f"https://localhost:{sim.ports[1]}"):
        assert post(sim, subscription["endpoint"], body, vapid, aud=aud).status_code == 401
    assert post(sim, subscription["endpoint"], body, vapid).status_code == 201

    reasons = [item["reason"] for item in sim.rejections(origin=1)]
    assert len(reasons) == 3 and all("aud" in reason for reason in reasons)
    assert sim.messages()[0].claims["aud"] == sim.origins[1]


@pytest.mark.parametrize("bad", [ORIGINS, -1, "https://127.0.0.1:1", True, "1.5"])
def test_bad_origin_is_refused(sim: PushSimulator, server_key: bytes, bad: object) -> None:
    with pytest.raises(SimulatorError, match="400"):
        sim.mint(1, server_key, origin=bad)  # type: ignore[arg-type]
    with pytest.raises(SimulatorError, match="400"):
        sim.hang(bad)  # type: ignore[arg-type]
    with pytest.raises(SimulatorError, match="400"):
        sim.stats(origin=bad)  # type: ignore[arg-type]


def test_latency_on_one_origin_only(sim: PushSimulator, vapid: Vapid02, server_key: bytes) -> None:
    [fast] = sim.mint(1, server_key, origin=0)
    [slow] = sim.mint(1, server_key, origin=1)
    sim.set_latency(500, origin=1)

    started = time.monotonic()
    assert post(sim, slow["endpoint"], encrypt(slow, b"s"), vapid).status_code == 201
    assert time.monotonic() - started >= 0.5
    started = time.monotonic()
    assert post(sim, fast["endpoint"], encrypt(fast, b"f"), vapid).status_code == 201
    sim.stats()  # control calls are never delayed
    assert time.monotonic() - started < 0.3

    sim.set_latency(300)  # every origin
    started = time.monotonic()
    assert post(sim, fast["endpoint"], encrypt(fast, b"f"), vapid).status_code == 201
    assert time.monotonic() - started >= 0.3


def test_hung_origin_never_answers_and_holds_nothing_else_up(
    sim: PushSimulator, vapid: Vapid02, server_key: bytes
) -> None:
    [healthy] = sim.mint(1, server_key, origin=0)
    hung_subscribers = sim.mint(4, server_key, origin=1)
    sim.hang(1)

    with open_tls(sim, 1) as stream:
        stream.sendall(
            wire(sim, hung_subscribers[0]["endpoint"], encrypt(hung_subscribers[0], b"lost"), vapid)
            + wire(sim, hung_subscribers[1]["endpoint"], encrypt(hung_subscribers[1], b"behind"), vapid)
        )
        started = time.monotonic()
        assert post(sim, healthy["endpoint"], encrypt(healthy, b"ok"), vapid).status_code == 201
        assert time.monotonic() - started < 0.5  # the other origin answers at once
        assert_no_answer(stream, 1.5)
        # The control API works, on the control port and on the hung origin's own port.
        stats = sim.stats(origin=1)
        assert (stats["requests"], stats["hung"], stats["delivered"]) == (2, 2, 0)
        control = requests.get(f"{sim.origins[1]}/_sim/stats?origin=1", verify=sim.ca_file, timeout=2)
        assert control.json()["hung"] == 2

        sim.hang(1, on=False)
        late = hung_subscribers[2]
        assert post(sim, late["endpoint"], encrypt(late, b"answered"), vapid).status_code == 201
        # What hung stays hung, the connection still open; HTTP/1.1 answers in order, so
        # nothing sent after it on that connection is answered either.
        stuck = hung_subscribers[3]
        stream.sendall(wire(sim, stuck["endpoint"], encrypt(stuck, b"stuck"), vapid))
        assert_no_answer(stream, 0.3)

    assert [m.plaintext for m in sim.messages(origin=1)] == [b"answered"]
    assert [r["status"] for r in sim.rejections(origin=1)] == [None, None, None]
    assert sim.stats(origin=1)["hung"] == 3
    assert sim.stats()["by_origin"][sim.origins[0]]["delivered"] == 1


def test_rate_limit_answers_exactly_the_burst(sim: PushSimulator, vapid: Vapid02, server_key: bytes) -> None:
    throttled = sim.mint(12, server_key, origin=1)
    healthy = sim.mint(12, server_key, origin=2)
    # A refill of one push every 100 s: nothing comes back during the test.
    sim.rate_limit(1, 0.01, burst=5)
    session = requests.Session()

    answers = [post(sim, s["endpoint"], encrypt(s, b"t"), vapid, session=session) for s in throttled]
    healthy_statuses = [post(sim, s["endpoint"], encrypt(s, b"h"), vapid, session=session).status_code for s in healthy]

    assert [a.status_code for a in answers] == [201] * 5 + [429] * 7
    assert all(a.headers["Retry-After"] == "1" for a in answers[5:])
    assert healthy_statuses == [201] * 12
    assert len(sim.messages(origin=1)) == 5  # throttled pushes are not delivered
    stats = sim.stats(origin=1)
    assert (stats["throttled"], stats["delivered"], stats["by_status"]) == (7, 5, {"201": 5, "429": 7})
    assert sim.stats()["throttled"] == 7 and sim.stats(origin=2)["throttled"] == 0


def test_rate_limit_refills_and_can_be_lifted(sim: PushSimulator, vapid: Vapid02, server_key: bytes) -> None:
    [subscription] = sim.mint(1, server_key, origin=0)
    body = encrypt(subscription, b"x")
    sim.rate_limit(0, 5)  # burst defaults to per_second: 5

    first = [post(sim, subscription["endpoint"], body, vapid).status_code for _ in range(6)]
    time.sleep(0.45)  # ~2 tokens back at 5/s
    second = [post(sim, subscription["endpoint"], body, vapid).status_code for _ in range(3)]
    sim.rate_limit(0, None)
    lifted = [post(sim, subscription["endpoint"], body, vapid).status_code for _ in range(8)]

    assert first == [201] * 5 + [429]
    assert Counter(second)[201] >= 2 and second[-1] == 429
    assert lifted == [201] * 8


@pytest.mark.parametrize(("status", "retry_after"), [(503, "120"), (406, "date"), (429, "date")])
def test_rate_limit_status_and_retry_after_forms(
    sim: PushSimulator, vapid: Vapid02, server_key: bytes, status: int, retry_after: str
) -> None:
    [subscription] = sim.mint(1, server_key, origin=2)
    body = encrypt(subscription, b"x")
    sim.rate_limit(2, 0.01, burst=1, retry_after=retry_after, status=status)

    assert post(sim, subscription["endpoint"], body, vapid).status_code == 201
    answer = post(sim, subscription["endpoint"], body, vapid)

    assert answer.status_code == status
    value = answer.headers["Retry-After"]
    if retry_after == "date":
        assert IMF_FIXDATE.fullmatch(value), value
        ahead = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        assert 0.5 <= ahead <= 2.5
    else:
        assert value == retry_after
    if status == 406:
        assert answer.headers["X-WNS-Status"] == "channelthrottled"
    assert sim.stats(origin=2)["by_status"] == {"201": 1, str(status): 1}


def test_rate_limit_applies_after_scripted_faults(sim: PushSimulator, vapid: Vapid02, server_key: bytes) -> None:
    [subscription] = sim.mint(1, server_key, origin=1)
    body = encrypt(subscription, b"x")
    sim.rate_limit(1, 0.01, burst=1)
    sim.fail(subscription["endpoint"], [500])

    statuses = [post(sim, subscription["endpoint"], body, vapid).status_code for _ in range(3)]

    # The scripted 500 is answered before the bucket is asked, so the one token is still there.
    assert statuses == [500, 201, 429]


@pytest.mark.parametrize("limit", [{"per_second": 0}, {"per_second": 1, "burst": 0}, {"per_second": 1, "status": 200}])
def test_bad_rate_limits_are_refused(sim: PushSimulator, limit: dict) -> None:
    with pytest.raises(SimulatorError, match="400"):
        sim.rate_limit(0, **limit)
    with pytest.raises(SimulatorError, match="400"):
        sim.rate_limit(0, 1, retry_after="soon")


def test_refused_origin_then_listening_again(sim: PushSimulator, vapid: Vapid02, server_key: bytes) -> None:
    [healthy] = sim.mint(1, server_key, origin=0)
    [subscription] = sim.mint(1, server_key, origin=1)
    port = sim.ports[1]
    kept = open_tls(sim, 1)
    kept.sendall(wire(sim, subscription["endpoint"], encrypt(subscription, b"before"), vapid))
    assert read_status(kept) == 201

    sim.refuse_connections(1)

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    assert_closed(kept)
    kept.close()
    assert post(sim, healthy["endpoint"], encrypt(healthy, b"ok"), vapid).status_code == 201

    sim.refuse_connections(1, on=False)
    assert sim.ports[1] == port
    assert post(sim, subscription["endpoint"], encrypt(subscription, b"after"), vapid).status_code == 201
    assert [m.plaintext for m in sim.messages(origin=1)] == [b"before", b"after"]


def test_a_single_refused_origin_keeps_the_control_api(vapid: Vapid02, server_key: bytes) -> None:
    with PushSimulator() as single:
        [subscription] = single.mint(1, server_key)
        single.refuse_connections(0)
        with pytest.raises(requests.ConnectionError):
            post(single, subscription["endpoint"], encrypt(subscription, b"x"), vapid)
        assert single.stats()["requests"] == 0
        single.reset()  # listens again
        assert post(single, subscription["endpoint"], encrypt(subscription, b"x"), vapid).status_code == 201


def test_fail_origin_with_a_status_then_a_drop(sim: PushSimulator, vapid: Vapid02, server_key: bytes) -> None:
    [healthy] = sim.mint(1, server_key, origin=0)
    [failing] = sim.mint(1, server_key, origin=2)
    body = encrypt(failing, b"x")
    sim.fail_origin(2, 502)

    assert [post(sim, failing["endpoint"], body, vapid).status_code for _ in range(3)] == [502] * 3
    # Even an unknown token gets the failure: the origin fails before it looks anything up.
    assert post(sim, on_origin(sim, healthy["endpoint"], 2), body, vapid).status_code == 502
    assert post(sim, healthy["endpoint"], encrypt(healthy, b"ok"), vapid).status_code == 201

    sim.fail_origin(sim.origins[2], "drop")
    with pytest.raises(requests.ConnectionError):
        post(sim, failing["endpoint"], body, vapid)

    sim.fail_origin(2, None)
    assert post(sim, failing["endpoint"], body, vapid).status_code == 201
    stats = sim.stats(origin=2)
    assert (stats["faulted"], stats["dropped"], stats["delivered"], stats["requests"]) == (4, 1, 1, 6)
    with pytest.raises(SimulatorError, match="400"):
        sim.fail_origin(2, 201)


def test_faults_on_several_origins_are_independent(sim: PushSimulator, vapid: Vapid02, server_key: bytes) -> None:
    [hung] = sim.mint(1, server_key, origin=0)
    throttled = sim.mint(3, server_key, origin=1)
    healthy = sim.mint(3, server_key, origin=2)
    sim.hang(0)
    sim.rate_limit(1, 0.01, burst=1, status=503, retry_after="120")
    sim.set_latency(200, origin=2)

    with open_tls(sim, 0) as stream:
        stream.sendall(wire(sim, hung["endpoint"], encrypt(hung, b"lost"), vapid))
        throttled_statuses = [post(sim, s["endpoint"], encrypt(s, b"t"), vapid).status_code for s in throttled]
        started = time.monotonic()
        healthy_statuses = [post(sim, s["endpoint"], encrypt(s, b"h"), vapid).status_code for s in healthy]
        elapsed = time.monotonic() - started
        assert_no_answer(stream, 0.5)

    assert throttled_statuses == [201, 503, 503]
    assert healthy_statuses == [201] * 3 and 0.6 <= elapsed < 1.5
    by_origin = sim.stats()["by_origin"]
    assert [by_origin[url]["delivered"] for url in sim.origins] == [0, 1, 3]
    assert [by_origin[url]["hung"] for url in sim.origins] == [1, 0, 0]
    assert [by_origin[url]["throttled"] for url in sim.origins] == [0, 2, 0]


def test_reset_ends_every_misbehaviour(sim: PushSimulator, vapid: Vapid02, server_key: bytes) -> None:
    subscriptions = [sim.mint(1, server_key, origin=index)[0] for index in range(ORIGINS)]
    sim.hang(0)
    sim.fail_origin(0, 500)
    sim.rate_limit(1, 0.01, burst=1)
    assert post(sim, subscriptions[1]["endpoint"], encrypt(subscriptions[1], b"x"), vapid).status_code == 201
    sim.refuse_connections(2)
    sim.fail_origin(1, "drop")
    sim.set_latency(100, origin=1)

    sim.reset()

    for subscription in subscriptions:
        for _ in range(2):  # twice: the bucket's one token would be gone
            response = post(sim, subscription["endpoint"], encrypt(subscription, b"y"), vapid)
            assert response.status_code == 201
    assert sim.stats()["delivered"] == 2 * ORIGINS
    started = time.monotonic()
    post(sim, subscriptions[1]["endpoint"], encrypt(subscriptions[1], b"z"), vapid)
    assert time.monotonic() - started >= 0.1  # latency is kept, as before


def test_stats_per_origin_and_by_origin(sim: PushSimulator, vapid: Vapid02, server_key: bytes) -> None:
    zero = sim.mint(2, server_key, origin=0)
    [one] = sim.mint(1, server_key, origin=1)
    for subscription in zero:
        assert post(sim, subscription["endpoint"], encrypt(subscription, b"0"), vapid).status_code == 201
    assert post(sim, one["endpoint"], encrypt(one, b"1"), vapid).status_code == 201
    assert post(sim, on_origin(sim, one["endpoint"], 0), encrypt(one, b"x"), vapid).status_code == 404

    total = sim.stats()
    per_origin = [sim.stats(origin=index) for index in range(ORIGINS)]

    assert (total["requests"], total["delivered"], total["rejected"]) == (4, 3, 1)
    assert total["by_status"] == {"201": 3, "404": 1}
    assert total["reasons"] == {"unknown subscription": 1}
    assert list(total["by_origin"]) == sim.origins
    assert [total["by_origin"][url] for url in sim.origins] == per_origin
    assert set(per_origin[0]) == set(total) - {"by_origin"}
    assert (per_origin[0]["requests"], per_origin[0]["delivered"], per_origin[0]["rejected"]) == (3, 2, 1)
    assert (per_origin[1]["requests"], per_origin[1]["delivered"]) == (1, 1)
    assert per_origin[2]["requests"] == 0
    assert sim.stats(origin=sim.origins[1]) == per_origin[1]
    for name in ("throttled", "hung", "faulted", "dropped"):
        assert total[name] == 0


def test_records_merge_in_arrival_order(sim: PushSimulator, vapid: Vapid02, server_key: bytes) -> None:
    order = [0, 1, 0, 2, 1]
    subscriptions = [sim.mint(1, server_key, origin=index)[0] for index in order]
    for position, subscription in enumerate(subscriptions):
        post(sim, subscription["endpoint"], encrypt(subscription, b"%d" % position), vapid)

    assert [m.plaintext for m in sim.messages()] == [b"%d" % p for p in range(len(order))]
    assert [m.origin for m in sim.messages()] == [sim.origins[index] for index in order]


def test_server_cli_announces_every_port(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    command = [sys.executable, "-m", "benchmarks.pushsim.server", "--state-dir", str(state), "--origins", "3"]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not (state / "ready.json").exists():
            assert process.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        ready = json.loads((state / "ready.json").read_text())
        assert len(set(ready["ports"])) == 3
        assert ready["origins"] == [f"https://127.0.0.1:{port}" for port in ready["ports"]]
        assert (ready["port"], ready["origin"]) == (ready["ports"][0], ready["origins"][0])
        context = ssl.create_default_context(cafile=str(state / "ca.pem"))
        for port in [*ready["ports"], ready["control_port"]]:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                context.wrap_socket(raw, server_hostname="127.0.0.1"),
            ):
                pass
    finally:
        assert process.stdin is not None
        process.stdin.close()  # the server's stop signal
        assert process.wait(timeout=10) == 0


def test_one_origin_by_default_and_bad_counts() -> None:
    with PushSimulator() as single:
        assert single.origins == [single.origin]
        assert single.authorities == [f"127.0.0.1:{single.port}"]
        assert list(single.stats()["by_origin"]) == [single.origin]
    with pytest.raises(ValueError, match="origins"):
        PushSimulator(origins=0)


def test_early_hints_come_before_every_answer_on_that_origin_only(
    sim: PushSimulator, vapid: Vapid02, server_key: bytes
) -> None:
    [hinted] = sim.mint(1, server_key, origin=1)
    [plain] = sim.mint(1, server_key, origin=0)
    sim.early_hints(1)

    def answer(subscription: dict, origin: int) -> bytes:
        with open_tls(sim, origin) as stream:
            stream.sendall(wire(sim, subscription["endpoint"], encrypt(subscription, b"{}"), vapid))
            buffer = b""
            while not re.search(rb"HTTP/1\.1 [2-5]\d\d [^\r]*\r\n(.*?\r\n)*?\r\n", buffer, re.S):
                chunk = stream.recv(65536)
                assert chunk, f"closed before a final answer: {buffer!r}"
                buffer += chunk
            return buffer

    hinted_answer = answer(hinted, 1)
    assert hinted_answer.startswith(b"HTTP/1.1 103 Early Hints\r\n")
    assert b"\r\n\r\nHTTP/1.1 201 " in hinted_answer
    assert answer(plain, 0).startswith(b"HTTP/1.1 201 ")
    assert sim.stats(origin=1)["delivered"] == 1  # an interim answer is not a delivery
    sim.reset()
    assert answer(hinted, 1).startswith(b"HTTP/1.1 201 ")


def _read_until_closed_or_quiet(stream: ssl.SSLSocket, quiet: float) -> tuple[bytes, bool]:
    """Everything the origin sends until it closes (True) or says nothing for `quiet` s."""
    stream.settimeout(quiet)
    buffer = b""
    try:
        while chunk := stream.recv(65536):
            buffer += chunk
    except TimeoutError:
        return buffer, False
    except (ssl.SSLError, ConnectionResetError):
        pass
    return buffer, True


@pytest.mark.parametrize("framing", ["close", "stall"])
def test_odd_framing_shapes_that_origins_answers_only_and_still_delivers(
    sim: PushSimulator, vapid: Vapid02, server_key: bytes, framing: str
) -> None:
    [odd] = sim.mint(1, server_key, origin=1)
    [plain] = sim.mint(1, server_key, origin=0)
    sim.framing(1, framing)

    def answer(subscription: dict, origin: int) -> tuple[bytes, bool]:
        with open_tls(sim, origin) as stream:
            stream.sendall(wire(sim, subscription["endpoint"], encrypt(subscription, b"{}"), vapid))
            return _read_until_closed_or_quiet(stream, quiet=0.5)

    head, closed = answer(odd, 1)
    assert head.startswith(b"HTTP/1.1 201 ")
    if framing == "close":  # no length: the body is what comes before the close
        assert b"content-length" not in head.lower() and closed
    else:  # one byte promised and never sent; the connection stays open, silent
        assert b"\r\nContent-Length: 1\r\n" in head and head.endswith(b"\r\n\r\n") and not closed
    assert sim.stats(origin=1)["delivered"] == 1
    plain_head, plain_closed = answer(plain, 0)
    assert b"\r\nContent-Length: 0\r\n" in plain_head and not plain_closed
    with pytest.raises(SimulatorError, match="framing"):
        sim.framing(1, "chunked-forever")
    sim.reset()
    reset_head, _ = answer(odd, 1)
    assert b"\r\nContent-Length: 0\r\n" in reset_head


def test_a_flood_answers_a_header_without_end_until_the_client_hangs_up(
    sim: PushSimulator, vapid: Vapid02, server_key: bytes
) -> None:
    [flooded] = sim.mint(1, server_key, origin=1)
    sim.framing(1, "flood")
    with open_tls(sim, 1) as stream:
        stream.sendall(wire(sim, flooded["endpoint"], encrypt(flooded, b"{}"), vapid))
        received, began = b"", time.monotonic()
        while len(received) < 4 << 20 and time.monotonic() - began < 10:
            received += stream.recv(1 << 20)
    assert received.startswith(b"HTTP/1.1 201 Flood\r\nX-Flood: aaaa") and b"\r\n\r\n" not in received
    assert len(received) >= 4 << 20
    assert sim.stats()["requests"] >= 1  # the control port (and the process) still answer

"""The push-service simulator itself: it must accept what is right and refuse what is wrong.

Senders here are the reference libraries (pywebpush, http_ece, py_vapid), so a pass means
the simulator agrees with them, and the project's own sender is then judged against it.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator

import http_ece
import pytest
import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from py_vapid import Vapid02, VapidException
from pywebpush import webpush

from benchmarks.pushsim import PushSimulator, SimulatorError, token_of
from benchmarks.pushsim.crypto import DecryptError, SubscriberKeys, b64url_decode, b64url_encode, decrypt, public_bytes
from tests.helpers.push_sender import encrypt, post_push

SUBJECT = "mailto:ops@publisher.example.org"


@pytest.fixture(scope="module")
def sim() -> Iterator[PushSimulator]:
    with PushSimulator() as simulator:
        yield simulator


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest) -> None:
    if "sim" in request.fixturenames:
        simulator: PushSimulator = request.getfixturevalue("sim")
        simulator.reset()
        simulator.set_latency(0)


@pytest.fixture
def subscription(sim: PushSimulator, server_key: bytes) -> dict:
    return sim.mint(1, server_key)[0]


def vapid_headers(vapid: Vapid02, aud: str, exp_in: int = 3600, sub: str = SUBJECT) -> dict[str, str]:
    """py_vapid's header when it accepts the claims; else our own ES256 signature.

    py_vapid refuses some bad claims (an aud with a path, a sub without mailto:), and the
    point is to send exactly those to the simulator.
    """
    claims = {"aud": aud, "exp": int(time.time()) + exp_in, "sub": sub}
    try:
        return vapid.sign(claims)
    except VapidException:
        pass
    segments = [b64url_encode(json.dumps(part).encode()) for part in ({"typ": "JWT", "alg": "ES256"}, claims)]
    signing_input = ".".join(segments).encode()
    r, s = decode_dss_signature(vapid.private_key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    jwt = signing_input.decode() + "." + b64url_encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    return {"Authorization": f"vapid t={jwt}, k={b64url_encode(public_bytes(vapid.private_key))}"}


def post(
    sim: PushSimulator,
    endpoint: str,
    body: bytes,
    vapid: Vapid02,
    *,
    aud: str | None = None,
    **headers: str,
) -> requests.Response:
    """POST like a sender; keyword headers use _ for - and replace the defaults."""
    sent = {"TTL": "60", "Content-Encoding": "aes128gcm", **vapid_headers(vapid, aud or sim.origin)}
    sent.update({name.replace("_", "-"): value for name, value in headers.items()})
    return post_push(sim, endpoint, body, {name: value for name, value in sent.items() if value is not None})


def test_mint_returns_subscription_json(sim: PushSimulator, server_key: bytes) -> None:
    minted = sim.mint(3, server_key)

    assert len({item["endpoint"] for item in minted}) == 3
    for item in minted:
        assert item["expirationTime"] is None
        assert item["endpoint"].startswith(f"https://127.0.0.1:{sim.port}/push/")
        assert 130 <= len(token_of(item["endpoint"])) <= 150
        assert len(b64url_decode(item["keys"]["p256dh"])) == 65
        assert len(b64url_decode(item["keys"]["auth"])) == 16


def test_accepts_and_decrypts_a_valid_push(sim: PushSimulator, vapid: Vapid02, subscription: dict) -> None:
    payload = json.dumps({"v": 1, "title": "Fox seen in Hyde Park", "tag": "story-1"}).encode()
    topic = b64url_encode(os.urandom(24))  # 32 characters

    response = post(sim, subscription["endpoint"], encrypt(subscription, payload), vapid, Urgency="high", Topic=topic)

    assert response.status_code == 201, response.text
    assert response.headers["Location"].startswith(f"{sim.origin}/m/")
    [message] = sim.messages(subscription["endpoint"])
    assert message.plaintext == payload
    assert message.json()["title"] == "Fox seen in Hyde Park"
    assert (message.ttl, message.urgency, message.topic) == (60, "high", topic)
    assert message.claims["aud"] == sim.origin
    assert message.claims["sub"] == SUBJECT
    assert sim.stats()["by_status"] == {"201": 1}


def test_pywebpush_webpush_is_accepted(sim: PushSimulator, vapid: Vapid02, subscription: dict) -> None:
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment beats session.verify
    session.verify = sim.ca_file

    response = webpush(
        subscription,
        data="hello from pywebpush",
        vapid_private_key=vapid,
        vapid_claims={"sub": SUBJECT},
        ttl=120,
        requests_session=session,
    )

    assert response.status_code == 201
    [message] = sim.messages(subscription["endpoint"])
    assert message.plaintext == b"hello from pywebpush"
    assert message.ttl == 120


def test_register_own_subscriber(sim: PushSimulator, vapid: Vapid02, server_key: bytes) -> None:
    keys = SubscriberKeys.generate()
    raw_scalar = keys.private_key.private_numbers().private_value.to_bytes(32, "big")
    registered = sim.register("my-own-token_1", raw_scalar, keys.auth, server_key)

    assert registered["endpoint"] == sim.endpoint("my-own-token_1")
    assert b64url_decode(registered["keys"]["p256dh"]) == keys.p256dh
    response = post(sim, registered["endpoint"], encrypt(registered, b"mine"), vapid)
    assert response.status_code == 201
    assert sim.messages("my-own-token_1")[0].plaintext == b"mine"


@pytest.mark.parametrize(
    ("rs", "size"),
    [(4096, 1), (4096, 3000), (100, 1000), (18, 5)],
)
def test_decrypt_agrees_with_http_ece(rs: int, size: int) -> None:
    keys = SubscriberKeys.generate()
    plaintext = os.urandom(size)
    body = http_ece.encrypt(
        plaintext,
        private_key=ec.generate_private_key(ec.SECP256R1()),
        dh=keys.p256dh,
        auth_secret=keys.auth,
        rs=rs,
        version="aes128gcm",
    )

    assert decrypt(body, keys) == plaintext
    assert http_ece.decrypt(body, private_key=keys.private_key, auth_secret=keys.auth, version="aes128gcm") == plaintext
    tampered = body[:-1] + bytes([body[-1] ^ 1])
    with pytest.raises(DecryptError):
        decrypt(tampered, keys)
    with pytest.raises(DecryptError):
        decrypt(body, SubscriberKeys.generate())


def test_wrong_audience_is_rejected(sim: PushSimulator, vapid: Vapid02, subscription: dict) -> None:
    body = encrypt(subscription, b"x")

    for aud in ("https://127.0.0.1", f"https://localhost:{sim.port}", f"{sim.origin}/"):
        assert post(sim, subscription["endpoint"], body, vapid, aud=aud).status_code == 401

    assert sim.messages() == []
    reasons = [item["reason"] for item in sim.rejections(subscription["endpoint"])]
    assert len(reasons) == 3
    assert all("aud" in reason for reason in reasons)


def test_key_other_than_the_subscriptions_is_refused(sim: PushSimulator, vapid: Vapid02, subscription: dict) -> None:
    other = Vapid02()
    other.generate_keys()

    response = post(sim, subscription["endpoint"], encrypt(subscription, b"x"), other)

    assert response.status_code == 403
    assert "applicationServerKey" in sim.rejections()[0]["reason"]


def test_signature_from_another_key_is_refused(sim: PushSimulator, vapid: Vapid02, subscription: dict) -> None:
    other = Vapid02()
    other.generate_keys()
    forged_jwt = vapid_headers(other, sim.origin)["Authorization"].split("t=")[1].split(",")[0]
    real_k = vapid_headers(vapid, sim.origin)["Authorization"].split("k=")[1]

    response = post(
        sim,
        subscription["endpoint"],
        encrypt(subscription, b"x"),
        vapid,
        Authorization=f"vapid t={forged_jwt}, k={real_k}",
    )

    assert response.status_code == 401
    assert "signature" in sim.rejections()[0]["reason"]


@pytest.mark.parametrize(("exp_in", "why"), [(-10, "expired"), (25 * 3600, "24 hours")])
def test_jwt_expiry_is_enforced(sim: PushSimulator, vapid: Vapid02, subscription: dict, exp_in: int, why: str) -> None:
    headers = vapid_headers(vapid, sim.origin, exp_in=exp_in)

    response = post(sim, subscription["endpoint"], encrypt(subscription, b"x"), vapid, **headers)

    assert response.status_code == 401
    assert why in sim.rejections()[0]["reason"]


def test_subject_must_be_a_contact(sim: PushSimulator, vapid: Vapid02, subscription: dict) -> None:
    headers = vapid_headers(vapid, sim.origin, sub="ops@publisher.example.org")

    assert post(sim, subscription["endpoint"], encrypt(subscription, b"x"), vapid, **headers).status_code == 401
    assert "sub" in sim.rejections()[0]["reason"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"TTL": None}, 400),
        ({"TTL": "-1"}, 400),
        ({"TTL": "soon"}, 400),
        ({"Content-Encoding": "aesgcm"}, 400),
        ({"Content-Encoding": None}, 400),
        ({"Urgency": "urgent"}, 400),
        ({"Topic": "a" * 33}, 400),
        ({"Topic": "has=padding"}, 400),
        ({"Authorization": None}, 401),
        ({"Authorization": "WebPush abc"}, 401),
    ],
)
def test_header_checks(
    sim: PushSimulator, vapid: Vapid02, subscription: dict, headers: dict[str, str | None], status: int
) -> None:
    response = post(sim, subscription["endpoint"], encrypt(subscription, b"x"), vapid, **headers)

    assert response.status_code == status
    assert sim.stats()["rejected"] == 1
    assert sim.messages() == []


def test_oversized_body_is_413(sim: PushSimulator, vapid: Vapid02, subscription: dict) -> None:
    body = encrypt(subscription, os.urandom(4096))  # 4096 + 103 bytes of overhead

    assert post(sim, subscription["endpoint"], body, vapid).status_code == 413


def test_unknown_subscription_is_404(sim: PushSimulator, vapid: Vapid02, subscription: dict) -> None:
    body = encrypt(subscription, b"x")

    assert post(sim, sim.endpoint("no-such-token"), body, vapid).status_code == 404


def test_body_for_another_subscriber_is_400(
    sim: PushSimulator, vapid: Vapid02, server_key: bytes, subscription: dict
) -> None:
    stranger = sim.mint(1, server_key)[0]

    response = post(sim, subscription["endpoint"], encrypt(stranger, b"not for you"), vapid)

    assert response.status_code == 400
    assert "decrypt" in sim.rejections()[0]["reason"]


def test_scripted_429_then_success(sim: PushSimulator, vapid: Vapid02, subscription: dict) -> None:
    sim.fail(subscription["endpoint"], [429, 429], retry_after="2")
    body = encrypt(subscription, b"eventually")

    first, second, third = (post(sim, subscription["endpoint"], body, vapid) for _ in range(3))

    assert [first.status_code, second.status_code, third.status_code] == [429, 429, 201]
    assert first.headers["Retry-After"] == "2"
    assert [m.plaintext for m in sim.messages()] == [b"eventually"]
    stats = sim.stats()
    assert (stats["faulted"], stats["delivered"], stats["by_status"]) == (2, 1, {"201": 1, "429": 2})


def test_a_scripted_answer_can_say_why_and_carry_headers(
    sim: PushSimulator, vapid: Vapid02, subscription: dict
) -> None:
    """As Apple says a 429 is about one device, and WNS that one channel is throttled."""
    sim.fail(subscription["endpoint"], [429], reason="TooManyRequests", headers={"X-WNS-Status": "channelthrottled"})
    answer = post(sim, subscription["endpoint"], encrypt(subscription, b"x"), vapid)
    assert (answer.status_code, answer.json()["reason"]) == (429, "TooManyRequests")
    assert answer.headers["X-WNS-Status"] == "channelthrottled"
    for bad in ({"reason": "two\nlines"}, {"headers": {"Bad Name": "x"}}, {"headers": {"X-A": "é"}}):
        with pytest.raises(SimulatorError, match="400"):
            sim.fail(subscription["endpoint"], [429], **bad)


@pytest.mark.parametrize("script", [[410], [404], [500, 503], [413], [400], [403]])
def test_scripted_statuses(sim: PushSimulator, vapid: Vapid02, subscription: dict, script: list[int]) -> None:
    sim.fail(subscription["endpoint"], script)
    body = encrypt(subscription, b"x")

    statuses = [post(sim, subscription["endpoint"], body, vapid).status_code for _ in range(len(script) + 1)]

    assert statuses == [*script, 201]


def test_always_gone(sim: PushSimulator, vapid: Vapid02, subscription: dict) -> None:
    sim.fail(subscription["endpoint"], 410, always=True)
    body = encrypt(subscription, b"x")

    assert [post(sim, subscription["endpoint"], body, vapid).status_code for _ in range(3)] == [410] * 3
    sim.fail(subscription["endpoint"], [])
    assert post(sim, subscription["endpoint"], body, vapid).status_code == 201


def test_drop_resets_the_connection(sim: PushSimulator, vapid: Vapid02, subscription: dict) -> None:
    sim.drop(subscription["endpoint"], times=2)
    body = encrypt(subscription, b"x")

    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            post(sim, subscription["endpoint"], body, vapid)

    assert post(sim, subscription["endpoint"], body, vapid).status_code == 201
    assert sim.stats()["dropped"] == 2


def test_latency_can_spread_log_normally_around_its_median(
    sim: PushSimulator, vapid: Vapid02, server_key: bytes
) -> None:
    """Real push services' answers spread around a typical delay; `spread` draws each push's
    delay from a log-normal whose median is the latency (σ = 0.5 here)."""
    subscriptions = sim.mint(24, server_key)
    bodies = [encrypt(item, b"spread") for item in subscriptions]
    sim.set_latency(100, spread=0.5)
    assert sim._call("GET", "health")["origins"][0]["latency_spread"] == 0.5
    delays: list[float] = []

    headers = {"TTL": "60", "Content-Encoding": "aes128gcm", **vapid_headers(vapid, sim.origin)}

    def send(index: int) -> None:
        endpoint = subscriptions[index]["endpoint"]
        with requests.Session() as session:  # connected first, so only the answer is timed
            post_push(sim, endpoint, bodies[index], headers, session)
            started = time.monotonic()
            if post_push(sim, endpoint, bodies[index], headers, session).status_code == 201:
                delays.append(time.monotonic() - started)

    threads = [threading.Thread(target=send, args=(index,)) for index in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(delays) == 24
    # One in 10,000 runs or so has no answer under 80 ms, or none over 130 ms, by chance.
    assert min(delays) < 0.08 and max(delays) > 0.13, sorted(delays)
    with pytest.raises(SimulatorError):
        sim.set_latency(100, spread=-1)
    with pytest.raises(SimulatorError):
        sim.set_latency(100, spread=4)
    sim.set_latency(0)  # a latency without a spread takes the spread away too
    assert sim._call("GET", "health")["origins"][0]["latency_spread"] == 0


def test_latency_delays_without_blocking(sim: PushSimulator, vapid: Vapid02, server_key: bytes) -> None:
    subscriptions = sim.mint(4, server_key)
    bodies = [encrypt(item, b"slow") for item in subscriptions]
    sim.set_latency(400)
    statuses: list[int] = []

    def send(index: int) -> None:
        statuses.append(post(sim, subscriptions[index]["endpoint"], bodies[index], vapid).status_code)

    started = time.monotonic()
    threads = [threading.Thread(target=send, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started

    assert statuses == [201] * 4
    # Four concurrent 400 ms answers finish together, not one after another (1.6 s).
    assert 0.4 <= elapsed < 1.2
    sim.set_latency(0)
    started = time.monotonic()
    assert post(sim, subscriptions[0]["endpoint"], bodies[0], vapid).status_code == 201
    assert time.monotonic() - started < 0.3


def _raw_request(sim: PushSimulator, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{sim.port}\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def _read_responses(stream: ssl.SSLSocket, count: int) -> list[bytes]:
    buffer = b""
    heads: list[bytes] = []
    while len(heads) < count:
        if b"\r\n\r\n" in buffer:
            head, _, rest = buffer.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(rest) >= length:
                heads.append(head)
                buffer = rest[length:]
                continue
        chunk = stream.recv(65536)
        assert chunk, "connection closed early"
        buffer += chunk
    return heads


@pytest.mark.parametrize("latency_ms", [0, 50])
def test_pipelined_requests_are_answered_in_order(
    sim: PushSimulator, vapid: Vapid02, server_key: bytes, latency_ms: int
) -> None:
    sim.set_latency(latency_ms)
    [good] = sim.mint(1, server_key)
    headers = {"TTL": "0", "Content-Encoding": "aes128gcm", **vapid_headers(vapid, sim.origin)}
    path = good["endpoint"][len(sim.origin) :]
    wire = (
        _raw_request(sim, path, encrypt(good, b"one"), headers)
        + _raw_request(sim, "/push/unknown", b"\x00" * 200, headers)
        + _raw_request(sim, path, encrypt(good, b"two"), headers)
    )

    with (
        socket.create_connection(("127.0.0.1", sim.port)) as raw,
        sim.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1") as stream,
    ):
        stream.sendall(wire)
        heads = _read_responses(stream, 3)

    assert [head[9:12] for head in heads] == [b"201", b"404", b"201"]
    assert [m.plaintext for m in sim.messages()] == [b"one", b"two"]


def test_sampled_and_deferred_verification(vapid: Vapid02, server_key: bytes) -> None:
    with PushSimulator(verify="sample:2") as sampled:
        subscriptions = sampled.mint(4, server_key)
        for item in subscriptions:
            assert post(sampled, item["endpoint"], encrypt(item, b"s"), vapid).status_code == 201
        assert [m.decrypted for m in sampled.messages()] == [True, False, True, False]

    with PushSimulator(verify="deferred") as deferred:
        good, other = deferred.mint(2, server_key)
        assert post(deferred, good["endpoint"], encrypt(good, b"d"), vapid).status_code == 201
        # Deferred answers before decrypting, so a wrong body is caught only when read back.
        assert post(deferred, good["endpoint"], encrypt(other, b"bad"), vapid).status_code == 201
        stats = deferred.stats()
        assert (stats["decrypted"], stats["decrypt_errors"]) == (1, 1)
        assert [m.plaintext for m in deferred.messages()] == [b"d", None]


def test_cpu_pinning_and_clean_stop() -> None:
    cpu = min(os.sched_getaffinity(0))
    with PushSimulator(cpu=cpu) as pinned:
        assert os.sched_getaffinity(pinned.pid) == {cpu}
        pid = pinned.pid
    assert not os.path.exists(f"/proc/{pid}")  # exited and reaped, not a zombie or orphan


def test_bad_option_fails_loudly() -> None:
    with pytest.raises(SimulatorError, match="verify must be"):
        PushSimulator(verify="sometimes", startup_timeout=10).start()


def test_control_api_reports_bad_calls(sim: PushSimulator) -> None:
    with pytest.raises(SimulatorError, match="400"):
        sim.mint(1, b"\x04" + b"\x00" * 64)  # not a point on the curve


def test_record_size_header_is_checked(sim: PushSimulator, vapid: Vapid02, subscription: dict) -> None:
    body = bytearray(encrypt(subscription, b"x"))
    struct.pack_into("!L", body, 16, 10)

    assert post(sim, subscription["endpoint"], bytes(body), vapid).status_code == 400

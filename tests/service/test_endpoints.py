"""The shared endpoint parser: host rules, and the API validator and the sender agreeing on
a corpus of tricky endpoints (the sender connects to exactly the host the API approved)."""

from __future__ import annotations

import asyncio
import timeit

import pytest

from service import create_app
from service.endpoints import InvalidEndpoint, PushEndpoint, check_host_entry, parse_endpoint
from service.settings import Settings
from service.subscriptions import Subscription
from service.vapid import b64url_decode
from tests.helpers import TEST_SUBJECT, fcm_endpoint, subscribe_body
from workers.delivery import HttpSender, Outcome
from workers.lanes import LanePolicy
from workers.message import PushHeaders
from workers.webpush import VapidHeaders

EXTRA_HOSTS = ("127.0.0.1:8443", "[::1]:8443", "push.example.net")

# endpoint -> (host, port, path, label)
ACCEPTED = {
    "https://fcm.googleapis.com/fcm/send/abc:def": ("fcm.googleapis.com", 443, "/fcm/send/abc:def", "fcm"),
    "https://fcm.googleapis.com/wp/abc?x=1": ("fcm.googleapis.com", 443, "/wp/abc?x=1", "fcm"),
    "https://FCM.GoogleAPIs.com/fcm/send/AbC": ("fcm.googleapis.com", 443, "/fcm/send/AbC", "fcm"),
    "https://fcm.googleapis.com:443/fcm/send/x": ("fcm.googleapis.com", 443, "/fcm/send/x", "fcm"),
    "https://fcm.googleapis.com": ("fcm.googleapis.com", 443, "/", "fcm"),
    "https://fcm.googleapis.com?x@evil.example": ("fcm.googleapis.com", 443, "/?x@evil.example", "fcm"),
    "https://fcm.googleapis.com/fcm/send/a%2Fb": ("fcm.googleapis.com", 443, "/fcm/send/a%2Fb", "fcm"),
    "https://updates.push.services.mozilla.com/wpush/v2/gAAA": (
        "updates.push.services.mozilla.com",
        443,
        "/wpush/v2/gAAA",
        "mozilla",
    ),
    "https://web.push.apple.com/QGx": ("web.push.apple.com", 443, "/QGx", "apple"),
    "https://api.sandbox.push.apple.com/x": ("api.sandbox.push.apple.com", 443, "/x", "apple"),
    "https://wns2-by3p.notify.windows.com/w/?token=BQYAAAB%2bXY": (
        "wns2-by3p.notify.windows.com",
        443,
        "/w/?token=BQYAAAB%2bXY",
        "wns",
    ),
    "https://wns2-by3p.notify.windows.com?token=a": ("wns2-by3p.notify.windows.com", 443, "/?token=a", "wns"),
    "https://127.0.0.1:8443/push/x?y=1": ("127.0.0.1", 8443, "/push/x?y=1", "127.0.0.1:8443"),
    "https://[::1]:8443/p": ("::1", 8443, "/p", "[::1]:8443"),
    "https://push.example.net/x": ("push.example.net", 443, "/x", "push.example.net"),
    "https://push.example.net:443/x": ("push.example.net", 443, "/x", "push.example.net"),
}

# endpoint -> InvalidEndpoint.reason
REFUSED = {
    "HTTPS://fcm.googleapis.com/fcm/send/x": "scheme",
    "Https://fcm.googleapis.com/fcm/send/x": "scheme",
    "http://fcm.googleapis.com/fcm/send/x": "scheme",
    "https:/fcm.googleapis.com/x": "scheme",
    " https://fcm.googleapis.com/x": "scheme",
    "not a url": "scheme",
    "https://fcm.googleapis.com/x y": "control",
    "https://fcm.googleapis.com/x\n": "control",
    "https://fcm.googleapis.com\t/x": "control",
    "https://fcm.googleapis.com/x\x00": "control",
    "https://fcm.googleapis.com\\@evil.example/x": "backslash",
    "https://fcm.googleapis.com/x\\y": "backslash",
    "https://evil.example#@fcm.googleapis.com/x": "fragment",
    "https://fcm.googleapis.com/x?y#z": "fragment",
    "https://user:pw@fcm.googleapis.com/x": "userinfo",
    "https://fcm.googleapis.com@169.254.169.254/x": "userinfo",
    "https://127.0.0.1:8443@fcm.googleapis.com/x": "userinfo",
    "https://fcm%2egoogleapis.com/x": "percent",
    "https://[fe80::1%25eth0]:8443/x": "percent",
    "https://fcm.googleapis.com./x": "trailing_dot",
    "https://web.push.apple.com./x": "trailing_dot",
    "https://zz9-evil.fcm.googleapis.com/x": "host_not_allowed",
    "https://a.b.c.notify.windows.com/x": "host_not_allowed",
    "https://x.updates.push.services.mozilla.com/x": "host_not_allowed",
    "https://notify.windows.com/x": "host_not_allowed",
    "https://push.apple.com/x": "host_not_allowed",
    "https://evilpush.apple.com/x": "host_not_allowed",
    "https://fcm.googleapis.com.evil.example/x": "host_not_allowed",
    "https://0x7f000001/x": "host_not_allowed",
    "https://localhost/x": "host_not_allowed",
    "https://xn--80ak6aa92e.notify.windows.com/x": "idn",
    "https://web.xn--80ak6aa92e.push.apple.com/x": "idn",
    "https://fcm.googleapis.cöm/x": "non_ascii",
    "https://fcm。googleapis.com/x": "non_ascii",
    "https://wns2-by3p.notify.windows.com/é": "non_ascii",
    "https://-wns.notify.windows.com/x": "bad_host",
    "https://" + "a" * 64 + ".notify.windows.com/x": "bad_host",
    "https://a_b.notify.windows.com/x": "bad_host",
    "https://web..push.apple.com/x": "bad_host",
    "https://[::1:8443/x": "bad_host",
    "https://1.2.3.4/x": "ip_address",
    "https://127.0.0.1/x": "ip_address",
    "https://127.0.0.1:8444/x": "ip_address",
    "https://169.254.169.254/latest/meta-data": "ip_address",
    "https://10.0.0.1/fcm.googleapis.com": "ip_address",
    "https://2130706433/x": "ip_address",
    "https://[::1]/x": "ip_address",
    "https://[::ffff:127.0.0.1]:8443/x": "ip_address",
    "https://localhost:8443/x": "port",
    "https://fcm.googleapis.com:8443/x": "port",
    "https://push.example.net:8443/x": "port",
    "https://fcm.googleapis.com:/x": "bad_port",
    "https://fcm.googleapis.com:0443/x": "bad_port",
    "https://fcm.googleapis.com:99999/x": "bad_port",
    "https://fcm.googleapis.com:+443/x": "bad_port",
    "https://fcm.googleapis.com:44 3/x": "control",
    "https:///x": "no_host",
    "https://:443/x": "no_host",
    "https://fcm.googleapis.com/" + "a" * 1000: "too_long",
}


@pytest.mark.parametrize(("url", "expected"), ACCEPTED.items(), ids=list(ACCEPTED))
def test_accepted_endpoints_derive_host_port_path_and_label(url, expected):
    assert parse_endpoint(url, EXTRA_HOSTS) == PushEndpoint(*expected)


@pytest.mark.parametrize(("url", "reason"), REFUSED.items(), ids=[repr(u[:60]) for u in REFUSED])
def test_refused_endpoints_say_why(url, reason):
    with pytest.raises(InvalidEndpoint) as refused:
        parse_endpoint(url, EXTRA_HOSTS)
    assert refused.value.reason == reason
    assert str(refused.value)


def test_authority_and_origin():
    assert parse_endpoint("https://fcm.googleapis.com:443/x").authority == "fcm.googleapis.com"
    assert parse_endpoint("https://fcm.googleapis.com/x").origin == "https://fcm.googleapis.com"
    simulator = parse_endpoint("https://127.0.0.1:8443/x", EXTRA_HOSTS)
    assert (simulator.authority, simulator.origin) == ("127.0.0.1:8443", "https://127.0.0.1:8443")
    assert parse_endpoint("https://[::1]:8443/p", EXTRA_HOSTS).origin == "https://[::1]:8443"


def test_extra_hosts_are_exact_and_only_what_is_listed():
    assert parse_endpoint("https://127.0.0.1:8443/x", ["127.0.0.1:8443"]).label == "127.0.0.1:8443"
    for extra in ((), ("127.0.0.1",), ("127.0.0.1:8444",), ("127.0.0.2:8443",)):
        with pytest.raises(InvalidEndpoint):
            parse_endpoint("https://127.0.0.1:8443/x", extra)


@pytest.mark.parametrize("entry", ["::1", "a:b", "x@y:1", "host.:1", "é.example", "[::1", "h:0"])
def test_bad_push_host_entries_are_refused_at_start(entry):
    with pytest.raises(InvalidEndpoint):
        check_host_entry(entry)


def test_parsing_costs_microseconds():
    url = fcm_endpoint()
    per_call = min(timeit.repeat(lambda: parse_endpoint(url), number=2000, repeat=5)) / 2000
    assert per_call < 50e-6  # ~2 µs measured; 50 µs would be a quarter of the push's encryption


# -- the validator and the sender agree -----------------------------------------------------


@pytest.fixture
def hardened(settings: Settings, vapid_key):
    """The app with the STORYPUSH_PUSH_HOSTS the sender below is given too."""
    return create_app(settings.with_overrides(push_hosts=EXTRA_HOSTS)).test_client()


def _validator_accepts(client, url: str) -> bool:
    response = client.post("/api/v1/subscriptions", json=subscribe_body(endpoint=url))
    if response.status_code == 201:
        return True
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["error"]["field"] == "subscription.endpoint"
    return False


@pytest.mark.parametrize("url", [*ACCEPTED, *REFUSED], ids=[repr(u[:60]) for u in [*ACCEPTED, *REFUSED]])
def test_validator_and_sender_agree(hardened, vapid_key, url):
    """The API accepts exactly what the sender's derivation accepts, and the sender would
    connect to exactly the host and port the validator approved."""
    accepted = _validator_accepts(hardened, url)
    assert accepted == (url in ACCEPTED)
    sender = HttpSender(VapidHeaders(vapid_key.private_key, TEST_SUBJECT), push_hosts=EXTRA_HOSTS)
    if not accepted:
        with pytest.raises(InvalidEndpoint):
            sender.route(url)
        return
    host, port, path, _ = ACCEPTED[url]
    route = sender.route(url)  # what send() connects to and requests
    assert (route.host, route.port, route.path) == (host, port, path)


def test_sender_delivers_to_the_approved_simulator_and_refuses_look_alikes(sim, vapid_key, settings: Settings):
    """Through the real sender: an approved endpoint reaches the simulator; variants the API
    refuses never leave the worker (failed with the parser's reason, nothing sent)."""
    authority = sim.origin.removeprefix("https://")
    vapid = VapidHeaders(vapid_key.private_key, TEST_SUBJECT)
    sender = HttpSender(vapid, LanePolicy(ceiling=4), push_hosts=(authority,), read_timeout=2)
    minted = sim.mint(1, vapid_key.public_bytes)[0]
    keys = minted["keys"]
    token = minted["endpoint"].rsplit("/push/", 1)[1]
    host, port = authority.split(":")

    def subscription(endpoint: str) -> Subscription:
        return Subscription(endpoint, b64url_decode(keys["p256dh"]), b64url_decode(keys["auth"]))

    async def send(endpoint: str):
        return await sender.send(subscription(endpoint), b'{"v":1}', PushHeaders(60, "normal", "A" * 32))

    look_alikes = [
        f"HTTPS://{authority}/push/{token}",
        f"https://{host}.:{port}/push/{token}",
        f"https://x@{authority}/push/{token}",
        f"https://{authority}\\@fcm.googleapis.com/push/{token}",
        f"https://{host}:0{port}/push/{token}",
        f"https://[::ffff:{host}]:{port}/push/{token}",
        f"https://localhost:{port}/push/{token}",
    ]
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(send(minted["endpoint"] + "?via=query")).outcome is Outcome.SENT
        for endpoint in look_alikes:
            result = loop.run_until_complete(send(endpoint))
            assert result.outcome is Outcome.FAILED and result.reason.startswith("endpoint_"), endpoint
            assert result.refusal  # counts towards deleting a subscription stored under looser rules
    finally:
        sender.close()
        loop.close()
    assert len(sim.messages(token)) == 1 and sim.stats()["requests"] == 1

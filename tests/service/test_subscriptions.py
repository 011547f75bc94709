"""The packed subscription record round-trips every endpoint byte for byte."""

from __future__ import annotations

import secrets

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.subscriptions import Subscription, pack, unpack


def _sub(endpoint: str) -> Subscription:
    return Subscription(
        endpoint,
        b"\x04" + secrets.token_bytes(64),
        secrets.token_bytes(16),
        ("animals", "news"),
        "en-GB",
        "Europe/London",
        1_800_000_000,
    )


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://fcm.googleapis.com/fcm/send/" + secrets.token_urlsafe(16) + ":APA91b" + secrets.token_urlsafe(100),
        "https://fcm.googleapis.com/fcm/send/" + secrets.token_urlsafe(113),
        "https://updates.push.services.mozilla.com/wpush/v2/gAAAAAB" + secrets.token_urlsafe(120),
        "https://web.push.apple.com/QGx" + secrets.token_urlsafe(90),
        "https://wns2-by3p.notify.windows.com/w/?token=BQYAAAD" + secrets.token_urlsafe(80),
        "https://127.0.0.1:8443/push/" + secrets.token_urlsafe(105),
        "https://fcm.googleapis.com/fcm/send/a:b:c",
        "https://fcm.googleapis.com/fcm/send/short",
        "https://fcm.googleapis.com/fcm/send/:" + "A" * 20,
        "https://fcm.googleapis.com/fcm/send/" + "A" * 20 + ":",
        "https://push.example/ünïcode/%20x",
    ],
)
def test_round_trip(endpoint):
    subscription = _sub(endpoint)
    assert unpack(pack(subscription)) == subscription


def test_typical_fcm_record_fits_redis_256_byte_class():
    endpoint = "https://fcm.googleapis.com/fcm/send/" + secrets.token_urlsafe(16)[:22] + ":APA91b" + "x" * 134
    assert len(pack(_sub(endpoint))) <= 250


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_:/?=%", max_size=300))
def test_any_rest_round_trips(rest):
    subscription = _sub("https://fcm.googleapis.com/fcm/send/" + rest)
    assert unpack(pack(subscription)).endpoint == subscription.endpoint

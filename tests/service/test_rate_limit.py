"""The one rate limiter: its expiry rule, the per-client limits (IPv6 per /64), the global
ceiling on new subscriptions, and failed token checks limited like sign-ins."""

from __future__ import annotations

import pytest

from service import create_app
from service.errors import RateLimited
from service.settings import Settings, load_settings
from service.store import keys
from service.store.rate_limit import RateLimiter, RateSlot
from tests.helpers import inside_one_minute, subscribe_body

TOKEN = "test-admin-token-0123456789"


@pytest.fixture(autouse=True)
def _one_window():
    inside_one_minute()


def _app_client(settings: Settings, **overrides):
    return create_app(settings.with_overrides(**overrides)).test_client()


def _from(address: str) -> dict:
    return {"environ_base": {"REMOTE_ADDR": address}}


# -- the limiter -------------------------------------------------------------------------


def test_a_window_expires_a_second_after_it_ends_and_hits_do_not_extend_it(redis_client):
    limiter = RateLimiter(redis_client)
    slot = RateSlot.current("api", "203.0.113.7", limit=3, window=60, now=6_000_030)
    assert slot.key == keys.rate_limit("api", "203.0.113.7", 100_000) and slot.retry_after == 30
    limiter.hit(slot)
    redis_client.expire(slot.key, 5)  # as if 56 s had passed: later hits must not push the expiry out
    limiter.hit(slot)
    limiter.hit(slot)
    assert redis_client.ttl(slot.key) <= 5
    with pytest.raises(RateLimited) as refused:
        limiter.hit(slot)
    assert refused.value.retry_after == 30


def test_first_hit_sets_the_expiry_to_the_window_plus_one(redis_client):
    slot = RateSlot.current("api", "x", limit=5, window=60)
    RateLimiter(redis_client).hit(slot)
    assert 60 <= redis_client.ttl(slot.key) <= 61


def test_check_refuses_once_the_limit_is_used_without_counting(redis_client):
    limiter = RateLimiter(redis_client)
    slot = RateSlot.current("auth", "x", limit=2)
    limiter.check(slot)
    assert redis_client.get(slot.key) is None
    limiter.hit(slot)
    limiter.hit(slot)
    with pytest.raises(RateLimited):
        limiter.check(slot)
    assert int(redis_client.get(slot.key)) == 2


def test_a_limit_of_zero_is_no_limit(redis_client):
    slot = RateSlot.current("new-subscriptions", "all", limit=0)
    for _ in range(5):
        RateLimiter(redis_client).hit(slot)
    assert redis_client.get(slot.key) is None


# -- per client ---------------------------------------------------------------------------


def test_ipv6_clients_share_a_limit_per_64(settings: Settings, vapid_key):
    client = _app_client(settings, rate_limit_per_minute=2)

    def prompt(address: str) -> int:
        return client.post("/api/v1/prompt-events", json={"type": "shown"}, **_from(address)).status_code

    assert [prompt("2001:db8:1:2::1"), prompt("2001:db8:1:2:aaaa::9")] == [204, 204]
    assert prompt("2001:db8:1:2:ffff:ffff:ffff:ffff") == 429  # same /64, any address in it
    assert prompt("2001:db8:1:3::1") == 204  # the next /64 is another client
    assert [prompt("203.0.113.7"), prompt("203.0.113.7"), prompt("203.0.113.8")] == [204, 204, 204]
    assert prompt("::ffff:203.0.113.7") == 429  # IPv4-mapped is the IPv4 client


def test_refused_subscribe_bodies_count_against_the_client(settings: Settings, vapid_key):
    client = _app_client(settings, rate_limit_per_minute=3)
    statuses = [client.post("/api/v1/subscriptions", json={"junk": True}).status_code for _ in range(4)]
    assert statuses == [422, 422, 422, 429]
    assert client.post("/api/v1/subscriptions", json=subscribe_body()).status_code == 429


# -- global ceiling on new subscriptions ----------------------------------------------------


def test_new_subscriptions_stop_at_the_global_ceiling_but_updates_go_on(settings: Settings, vapid_key, store):
    client = _app_client(settings, new_subscriptions_per_minute=3)
    bodies = [subscribe_body() for _ in range(5)]
    statuses = [
        client.post("/api/v1/subscriptions", json=body, **_from(f"198.51.100.{i}")).status_code
        for i, body in enumerate(bodies)
    ]
    assert statuses == [201, 201, 201, 429, 429]  # different clients: only the global ceiling applies
    refused = client.post("/api/v1/subscriptions", json=bodies[4])
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.get_json()["error"]["code"] == "rate_limited"
    assert client.post("/api/v1/subscriptions", json={**bodies[0], "topics": ["sport"]}).status_code == 200
    assert store.subscriptions.count() == 3
    assert int(store.client.get(keys.SUBSCRIPTION_SEQ)) == 3  # no id was spent on a refused one


def test_the_ceiling_is_configurable_and_zero_turns_it_off(settings: Settings, vapid_key, store):
    assert load_settings({}).new_subscriptions_per_minute == 6000
    assert load_settings({"STORYPUSH_NEW_SUBSCRIPTIONS_PER_MINUTE": "0"}).new_subscriptions_per_minute == 0
    client = _app_client(settings, new_subscriptions_per_minute=0)
    assert all(client.post("/api/v1/subscriptions", json=subscribe_body()).status_code == 201 for _ in range(5))


# -- failed token checks ---------------------------------------------------------------------


def test_failed_admin_bearer_tokens_are_limited_per_client(client):
    wrong = {"Authorization": "Bearer guess-guess-guess-guess"}
    right = {"Authorization": f"Bearer {TOKEN}"}
    for _ in range(30):  # right tokens never count
        assert client.get("/admin/api/campaigns", headers=right).status_code == 200
    assert [client.get("/admin/api/overview", headers=wrong).status_code for _ in range(10)] == [401] * 10
    refused = client.get("/admin/api/overview", headers=wrong)
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
    # Over the limit even the right token gets no answer, or the limit would be an oracle.
    assert client.get("/admin/api/campaigns", headers=right).status_code == 429
    assert client.post("/admin/login", data={"token": TOKEN}).status_code == 429
    assert client.get("/admin/api/campaigns", headers=right, **_from("192.0.2.1")).status_code == 200


def test_failed_sign_ins_and_bearer_tokens_share_one_budget(client):
    for _ in range(5):
        assert client.post("/admin/login", data={"token": "guess-guess-guess-guess"}).status_code == 401
    for _ in range(5):
        assert client.get("/admin/api/overview", headers={"Authorization": "Bearer x"}).status_code == 401
    assert client.post("/admin/login", data={"token": "guess-guess-guess-guess"}).status_code == 429


def test_failed_metrics_tokens_are_limited_too(settings: Settings, vapid_key):
    token = "metrics-token-0123456789"
    client = _app_client(settings, metrics_token=token)
    assert [client.get("/metrics").status_code for _ in range(10)] == [401] * 10
    assert client.get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 429

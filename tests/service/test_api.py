"""The browser API against a real Redis: contract shapes, validation, idempotency."""

from __future__ import annotations

import base64

import pytest

from service.settings import Settings
from tests.helpers import BrowserKeys, fcm_endpoint, inside_one_minute, subscribe_body


def _error(response, status: int, code: str) -> dict:
    """The error of a refused request, checked to have exactly `status`, `code` and the shape."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "field"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]


def test_vapid_public_key_is_the_65_byte_point(client, vapid_key):
    response = client.get("/api/v1/vapid-public-key")
    assert response.status_code == 200
    key = response.get_json()["publicKey"]
    assert "=" not in key
    raw = base64.urlsafe_b64decode(key + "==")
    assert len(raw) == 65 and raw[0] == 4
    assert key == vapid_key.public_key_b64


def test_topics_are_the_publishers(client):
    topics = client.get("/api/v1/topics").get_json()["topics"]
    assert {"id": "animals", "name": "Animals"} in topics
    assert [t["id"] for t in topics] == ["news", "entertainment", "tv-and-film", "animals", "sport", "lifestyle"]


def test_subscribe_then_same_endpoint_updates(client, store):
    body = subscribe_body(topics=["animals"], locale="en-GB", timezone="Europe/London")
    first = client.post("/api/v1/subscriptions", json=body)
    assert first.status_code == 201
    id_ = first.get_json()["id"]
    body["topics"] = ["sport", "news"]
    second = client.post("/api/v1/subscriptions", json=body)
    assert second.status_code == 200
    assert second.get_json()["id"] == id_
    assert store.subscriptions.count() == 1
    assert store.subscriptions.count_by_topic() == {
        "news": 1,
        "entertainment": 0,
        "tv-and-film": 0,
        "animals": 0,
        "sport": 1,
        "lifestyle": 0,
    }
    stored = store.subscriptions.get(int(id_))
    assert stored.endpoint == body["subscription"]["endpoint"]  # byte for byte
    assert stored.topics == ("sport", "news")
    assert stored.locale == "en-GB" and stored.timezone == "Europe/London"


def test_delete_is_idempotent(client, store):
    body = subscribe_body()
    client.post("/api/v1/subscriptions", json=body)
    endpoint = body["subscription"]["endpoint"]
    assert client.delete("/api/v1/subscriptions", json={"endpoint": endpoint}).status_code == 204
    assert store.subscriptions.count() == 0
    assert store.subscriptions.count_by_topic()["animals"] == 0
    assert client.delete("/api/v1/subscriptions", json={"endpoint": endpoint}).status_code == 204


def test_change_carries_topics_and_settings_over(client, store):
    body = subscribe_body(topics=["animals", "tv-and-film"], locale="de-DE", timezone="Europe/Berlin")
    old_endpoint = body["subscription"]["endpoint"]
    id_ = client.post("/api/v1/subscriptions", json=body).get_json()["id"]
    new_keys = BrowserKeys.generate()
    new_endpoint = fcm_endpoint()
    change = {"oldEndpoint": old_endpoint, "subscription": new_keys.subscription_json(new_endpoint)}
    response = client.post("/api/v1/subscriptions/change", json=change)
    assert response.status_code == 200
    assert response.get_json()["id"] == id_
    assert store.subscriptions.get_by_endpoint(old_endpoint) is None
    _, moved = store.subscriptions.get_by_endpoint(new_endpoint)
    assert moved.topics == ("animals", "tv-and-film")
    assert moved.locale == "de-DE" and moved.timezone == "Europe/Berlin"
    assert moved.p256dh == new_keys.p256dh and moved.auth == new_keys.auth
    assert store.subscriptions.count() == 1
    # a replay of the same change is harmless
    assert client.post("/api/v1/subscriptions/change", json=change).get_json()["id"] == id_


def test_change_of_unknown_subscription_is_404(client):
    change = {"oldEndpoint": fcm_endpoint(), "subscription": BrowserKeys.generate().subscription_json(fcm_endpoint())}
    response = client.post("/api/v1/subscriptions/change", json=change)
    assert _error(response, 404, "not_found")["field"] == "oldEndpoint"


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://fcm.googleapis.com/fcm/send/x",
        "https://169.254.169.254/x.fcm.googleapis.com/",
        "https://fcm.googleapis.com.evil.example/x",
        "https://evilfcm.googleapis.com.example/x",
        "https://user:pw@fcm.googleapis.com/x",
        "https://fcm.googleapis.com@169.254.169.254/x",
        "https://fcm.googleapis.com:8443/x",
        "https://127.0.0.1/x",
        "https://[::1]/x",
        "https://10.0.0.1/fcm.googleapis.com",
        "https://localhost/x",
        "https://fcm.googleapis.com/" + "a" * 1100,
        "https://fcm.googleapis.com/x\n",
        "not a url",
    ],
)
def test_refuses_endpoints_that_are_not_push_services(client, endpoint):
    response = client.post("/api/v1/subscriptions", json=subscribe_body(endpoint=endpoint))
    error = _error(response, 422, "invalid_field")
    assert error["field"] == "subscription.endpoint"
    assert error["message"].startswith("subscription.endpoint: ")


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://fcm.googleapis.com/fcm/send/abc",
        "https://updates.push.services.mozilla.com/wpush/v2/gAAA",
        "https://web.push.apple.com/QGx",
        "https://wns2-by3p.notify.windows.com/w/?token=BQYAAAD",
        "https://fcm.googleapis.com:443/fcm/send/abc",
    ],
)
def test_accepts_real_push_services(client, endpoint):
    assert client.post("/api/v1/subscriptions", json=subscribe_body(endpoint=endpoint)).status_code == 201


def test_push_hosts_setting_allows_a_local_simulator(redis_client, settings: Settings, vapid_key):
    from service import create_app

    app = create_app(settings.with_overrides(push_hosts=("127.0.0.1:8443",)))
    client = app.test_client()
    assert client.post("/api/v1/subscriptions", json=subscribe_body("https://127.0.0.1:8443/push/a")).status_code == 201
    refused = client.post("/api/v1/subscriptions", json=subscribe_body("https://127.0.0.1:9443/push/a"))
    assert _error(refused, 422, "invalid_field")["field"] == "subscription.endpoint"


def _with_keys(p256dh: str, auth: str) -> dict:
    body = subscribe_body()
    body["subscription"]["keys"] = {"p256dh": p256dh, "auth": auth}
    return body


def test_refuses_keys_that_are_not_a_p256_point_or_16_bytes(client):
    good = BrowserKeys.generate().subscription_json(fcm_endpoint())["keys"]
    off_curve = base64.urlsafe_b64encode(b"\x04" + b"\x01" * 64).decode().rstrip("=")
    compressed = base64.urlsafe_b64encode(b"\x02" + b"\x01" * 32).decode().rstrip("=")
    one_byte_auth = base64.urlsafe_b64encode(b"\x01").decode().rstrip("=")
    cases = [
        (_with_keys(off_curve, good["auth"]), "subscription.keys.p256dh"),
        (_with_keys(compressed, good["auth"]), "subscription.keys.p256dh"),
        (_with_keys("!!!", good["auth"]), "subscription.keys.p256dh"),
        (_with_keys(good["p256dh"], one_byte_auth), "subscription.keys.auth"),
    ]
    for body, field in cases:
        response = client.post("/api/v1/subscriptions", json=body)
        assert _error(response, 422, "invalid_field")["field"] == field


def test_refuses_unknown_topics_bad_zones_and_bad_json(client):
    response = client.post("/api/v1/subscriptions", json=subscribe_body(topics=["knitting"]))
    error = _error(response, 422, "invalid_field")
    assert error["field"] == "topics" and "unknown topic 'knitting'" in error["message"]
    response = client.post("/api/v1/subscriptions", json=subscribe_body(timezone="Mars/Olympus"))
    assert _error(response, 422, "invalid_field")["field"] == "timezone"
    response = client.post("/api/v1/subscriptions", data="{not json", content_type="application/json")
    assert _error(response, 400, "bad_json")["field"] is None
    response = client.post("/api/v1/subscriptions", json=[1, 2])
    assert _error(response, 422, "invalid_field")["message"] == "request body must be a JSON object"
    response = client.post("/api/v1/subscriptions", json={"topics": ["animals"]})
    assert _error(response, 422, "invalid_field")["field"] == "subscription"


def test_refuses_large_bodies_with_413(client):
    body = subscribe_body()
    body["padding"] = "x" * 20_000
    response = client.post("/api/v1/subscriptions", json=body)
    assert _error(response, 413, "too_large")["field"] is None


def test_rate_limit_answers_429_with_retry_after(redis_client, settings: Settings, vapid_key):
    from service import create_app

    client = create_app(settings.with_overrides(rate_limit_per_minute=3)).test_client()
    inside_one_minute()
    statuses = [client.post("/api/v1/prompt-events", json={"type": "shown"}).status_code for _ in range(5)]
    assert statuses == [204, 204, 204, 429, 429]
    response = client.post("/api/v1/prompt-events", json={"type": "shown"})
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    _error(response, 429, "rate_limited")


def test_prompt_events_are_counted(client, store):
    for kind in ["shown", "shown", "accepted", "declined", "denied"]:
        assert client.post("/api/v1/prompt-events", json={"type": kind}).status_code == 204
    refused = client.post("/api/v1/prompt-events", json={"type": "clicked"})
    assert _error(refused, 422, "invalid_field")["field"] == "type"
    assert store.prompt_funnel() == {"shown": 2, "accepted": 1, "declined": 1, "denied": 1}


def test_cors_only_for_allowed_origins(redis_client, settings: Settings, vapid_key):
    from service import create_app

    client = create_app(settings.with_overrides(allowed_origins=("https://publisher.example",))).test_client()
    ok = client.options(
        "/api/v1/subscriptions",
        headers={"Origin": "https://publisher.example", "Access-Control-Request-Method": "POST"},
    )
    assert ok.headers.get("Access-Control-Allow-Origin") == "https://publisher.example"
    other = client.get("/api/v1/topics", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_no_cross_origin_by_default(client):
    response = client.get("/api/v1/topics", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_unknown_route_and_method_use_the_error_shape(client):
    _error(client.get("/api/v1/nope"), 404, "not_found")
    response = client.put("/api/v1/subscriptions", json={})
    _error(response, 405, "method_not_allowed")
    assert set(response.headers["Allow"].split(", ")) >= {"POST", "DELETE"}


def test_openapi_document_describes_the_browser_api(client):
    doc = client.get("/api/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    assert "/api/v1/subscriptions" in doc["paths"]
    assert "SubscribeRequest" in doc["components"]["schemas"]

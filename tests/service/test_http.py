"""The HTTP edge: hostile bodies are a 4xx in the error shape, never a 500; client identity."""

from __future__ import annotations

import json

import pytest

from service.http import client_group
from tests.helpers import subscribe_body

WRITES = [
    ("POST", "/api/v1/subscriptions"),
    ("DELETE", "/api/v1/subscriptions"),
    ("POST", "/api/v1/subscriptions/change"),
    ("POST", "/api/v1/events"),
    ("POST", "/api/v1/prompt-events"),
]

HOSTILE_BODIES = [
    (b"", 400),
    (b"[" * 1500, 400),  # the row: under 8 KiB, deeper than json's recursion limit
    (b'{"a":' * 1200 + b"1" + b"}" * 1200, 400),
    (b'{"type": ' + b"9" * 5000 + b"}", 400),  # over Python's 4,300-digit int limit
    (b'{"type": NaN}', 400),
    (b'{"type": -Infinity}', 400),
    (b'{"type": 1e400}', 400),
    (b'{"type": "\\udc00", "receipt": "x", "endpoint": "\\ud800"}', 400),  # lone surrogates
    ('{"type": "shown"}'.encode("utf-16"), 400),
    (b"\xef\xbb\xbf{}", 400),  # a byte-order mark
    (b"\xff\xfe\x00", 400),
    (b"null", 422),
    (b"[]", 422),
    (b'"text"', 422),
    (b"{}", 422),
    (b'{"type": ["shown"], "receipt": {}, "endpoint": 5, "subscription": "x", "oldEndpoint": []}', 422),
]


@pytest.mark.parametrize(("method", "path"), WRITES)
@pytest.mark.parametrize(("body", "status"), HOSTILE_BODIES)
def test_hostile_bodies_are_4xx_never_500(client, method, path, body, status):
    response = client.open(path, method=method, data=body, content_type="application/json")
    assert response.status_code == status, response.get_json()
    assert set(response.get_json()["error"]) == {"code", "message", "field"}


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/x"])
def test_the_content_type_does_not_matter(client, content_type):
    response = client.post("/api/v1/prompt-events", data=b'{"type": "shown"}', content_type=content_type)
    assert response.status_code == 204


def test_duplicate_keys_keep_the_last_value(client):
    body = b'{"type": "nonsense", "type": "shown"}'
    assert client.post("/api/v1/prompt-events", data=body, content_type="application/json").status_code == 204


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timezone", "America"),  # a directory in the zone database: ZoneInfo raises IsADirectoryError
        ("timezone", "../../../../etc/passwd"),
        ("timezone", "zone1970.tab"),
        ("timezone", "Europe/London\x00"),
        ("locale", "é" * 10),
        ("topics", ["é", "\u202e"]),
    ],
)
def test_odd_subscription_settings_are_422(client, field, value):
    response = client.post("/api/v1/subscriptions", json=subscribe_body(**{field: value}))
    assert response.status_code == 422
    assert response.get_json()["error"]["field"].startswith(field)


@pytest.mark.parametrize("receipt", ["cabc.1.é", "é", "c0123456789ab.1.\U0001f600" * 3, "\x00", "a.b.c.d"])
def test_non_ascii_or_malformed_receipts_are_forged_not_500(client, receipt):
    """The issue's row: a non-ASCII receipt made hmac.compare_digest raise a TypeError."""
    response = client.post("/api/v1/events", json={"type": "clicked", "receipt": receipt})
    assert response.status_code == 403
    assert response.get_json()["error"]["field"] == "receipt"


def test_non_ascii_endpoints_in_deletes_and_changes_are_fine(client):
    assert client.delete("/api/v1/subscriptions", json={"endpoint": "https://ünïcödé.example/x"}).status_code == 204
    response = client.post(
        "/api/v1/subscriptions/change", json={"oldEndpoint": "é", "subscription": subscribe_body()["subscription"]}
    )
    assert response.status_code == 404


def test_uppercase_scheme_is_refused(client):
    """The issue's row: HTTPS:// was accepted and the sender would have connected to "HTTPS:"."""
    body = subscribe_body(endpoint="HTTPS://fcm.googleapis.com/fcm/send/x")
    response = client.post("/api/v1/subscriptions", json=body)
    assert response.status_code == 422
    assert response.get_json()["error"]["field"] == "subscription.endpoint"


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://zz9-evil.fcm.googleapis.com/x",
        "https://a.b.c.notify.windows.com/x",
        "https://x.updates.push.services.mozilla.com/x",
    ],
)
def test_look_alike_push_hosts_are_refused(client, endpoint):
    """The issue's row: subdomains of the real push services' hosts were accepted."""
    response = client.post("/api/v1/subscriptions", json=subscribe_body(endpoint=endpoint))
    assert response.status_code == 422
    assert "not a known push service" in response.get_json()["error"]["message"]


@pytest.mark.parametrize(
    ("address", "group"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("unknown", "unknown"),
    ],
)
def test_clients_are_grouped_per_ipv4_address_and_ipv6_64(address, group):
    assert client_group(address) == group


def test_openapi_json_is_valid_json_of_the_documented_shape(client):
    assert json.loads(client.get("/api/openapi.json").data)["openapi"].startswith("3.")

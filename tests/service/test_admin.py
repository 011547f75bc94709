"""The operator API and its auth: bearer token, signed session cookie, CSRF, shapes as in the README."""

from __future__ import annotations

import time

import pytest
from rq import Queue, Worker
from rq.job import Job

from service import create_app
from service.store.campaign_store import CampaignState
from tests.helpers import inside_one_minute, subscribe_body
from tests.helpers.admin import ADMIN_TOKEN, BEARER, make_campaign, make_failed_job, sign_in

CAMPAIGN_KEYS = {
    "id", "story", "state", "targeted", "sent", "failed", "expired", "skipped", "retrying", "delivered", "clicked",
    "dismissed", "created_at", "started_at", "finished_at", "errors",
}  # fmt: skip


# -- auth ------------------------------------------------------------------------------


@pytest.fixture
def no_token_client(settings, vapid_key):
    app = create_app(settings.with_overrides(admin_token=None))
    app.config["TESTING"] = True
    return app.test_client()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin"),
        ("GET", "/admin/api/overview"),
        ("GET", "/admin/api/campaigns"),
        ("POST", "/admin/api/campaigns/c1/cancel"),
        ("GET", "/admin/api/failed-jobs"),
        ("GET", "/admin/api/send-rate"),
        ("POST", "/admin/login"),
    ],
)
def test_no_token_configured_refuses_everything(no_token_client, method, path):
    response = no_token_client.open(path, method=method, headers=BEARER, data={"token": ADMIN_TOKEN})
    assert response.status_code == 401


def test_no_token_configured_login_page_says_so(no_token_client):
    response = no_token_client.get("/admin/login")
    assert response.status_code == 401
    assert "STORYPUSH_ADMIN_TOKEN is not set" in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "header", ["Bearer wrong-token-0123456789", "Basic " + ADMIN_TOKEN, f"Bearer {ADMIN_TOKEN}x", ""]
)
def test_wrong_or_missing_bearer_is_401_with_error_shape(client, header):
    response = client.get("/admin/api/overview", headers={"Authorization": header} if header else {})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_bearer_token_opens_api_and_pages(client):
    assert client.get("/admin/api/overview", headers=BEARER).status_code == 200
    assert client.get("/admin", headers=BEARER).status_code == 200


def test_pages_without_session_redirect_to_sign_in(client):
    response = client.get("/admin")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/admin/login")


def test_sign_in_sets_a_strict_secure_httponly_cookie(client):
    response = client.post("/admin/login", data={"token": ADMIN_TOKEN})
    assert response.status_code == 302 and response.headers["Location"] == "/admin"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("sp_admin=")
    for flag in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/admin"):
        assert flag in cookie
    assert ADMIN_TOKEN not in cookie
    assert client.get("/admin/api/campaigns").status_code == 200


def test_wrong_token_sign_in_is_refused(client):
    response = client.post("/admin/login", data={"token": "not-the-token-0123456789"})
    assert response.status_code == 401
    assert "wrong token" in response.get_data(as_text=True)
    assert "Set-Cookie" not in response.headers
    assert client.get("/admin/api/campaigns").status_code == 401


def test_sign_in_only_redirects_inside_admin(client):
    response = client.post("/admin/login?next=//evil.example/admin", data={"token": ADMIN_TOKEN})
    assert response.headers["Location"] == "/admin"
    response = client.post("/admin/login?next=/admin/campaigns/c1", data={"token": ADMIN_TOKEN})
    assert response.headers["Location"] == "/admin/campaigns/c1"


def test_tampered_or_foreign_cookie_is_refused(client, app, settings, vapid_key):
    client.set_cookie("sp_admin", "eyJjc3JmIjoieCJ9.forged.signature", path="/admin")
    assert client.get("/admin/api/campaigns").status_code == 401
    # a session signed under another admin token (rotated token) is no longer valid
    other = create_app(settings.with_overrides(admin_token="another-admin-token-987654321")).test_client()
    other.post("/admin/login", data={"token": "another-admin-token-987654321"})
    foreign = other.get_cookie("sp_admin", path="/admin").value
    client.set_cookie("sp_admin", foreign, path="/admin")
    assert client.get("/admin/api/campaigns").status_code == 401


def test_cookie_post_needs_the_csrf_token(client, store):
    campaign_id = make_campaign(store, "csrf-story")
    csrf = sign_in(client)
    refused = client.post(f"/admin/api/campaigns/{campaign_id}/cancel")
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "forbidden"
    wrong = client.post(f"/admin/api/campaigns/{campaign_id}/cancel", headers={"X-CSRF-Token": "x" + csrf})
    assert wrong.status_code == 403
    assert store.campaigns.state(campaign_id) is CampaignState.QUEUED
    accepted = client.post(f"/admin/api/campaigns/{campaign_id}/cancel", headers={"X-CSRF-Token": csrf})
    assert accepted.status_code == 200
    assert accepted.get_json()["state"] == "cancelled"


def test_csrf_token_also_accepted_as_form_field(client):
    csrf = sign_in(client)
    assert client.post("/admin/logout").status_code == 403
    response = client.post("/admin/logout", data={"csrf_token": csrf})
    assert response.status_code == 302
    assert client.get("/admin/api/campaigns").status_code == 401  # signed out


def test_bearer_post_needs_no_csrf(client, store):
    campaign_id = make_campaign(store, "bearer-story")
    assert client.post(f"/admin/api/campaigns/{campaign_id}/cancel", headers=BEARER).status_code == 200


def test_admin_responses_are_hardened(client):
    response = client.get("/admin/api/overview", headers=BEARER)
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_sign_in_attempts_are_rate_limited(client):
    inside_one_minute()
    for _ in range(10):
        client.post("/admin/login", data={"token": "guess-guess-guess-guess"})
    response = client.post("/admin/login", data={"token": ADMIN_TOKEN})
    assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1


# -- operator API shapes -------------------------------------------------------------------


def test_overview_shape(client, store, redis_client, settings):
    for topics in (["animals"], ["animals", "sport"]):
        assert client.post("/api/v1/subscriptions", json=subscribe_body(topics=topics)).status_code == 201
    for kind in ("shown", "shown", "accepted", "declined"):
        store.count_prompt_event(kind)
    queue = Queue(settings.queue_name, connection=redis_client)
    queue.enqueue("tests.helpers.jobs.succeed")
    worker = Worker([queue], connection=redis_client, name="ops-test-worker")
    worker.register_birth()
    worker.heartbeat()
    try:
        body = client.get("/admin/api/overview", headers=BEARER).get_json()
    finally:
        worker.register_death()
    assert set(body) == {"subscribers", "queues", "workers", "send_rate", "push_services", "prompt_funnel"}
    assert body["subscribers"]["total"] == 2
    assert body["subscribers"]["by_topic"]["animals"] == 2 and body["subscribers"]["by_topic"]["sport"] == 1
    assert body["queues"] == [
        {"name": "storypush", "queued": 1, "started": 0, "scheduled": 0, "deferred": 0, "failed": 0}
    ]
    (row,) = body["workers"]
    assert row["name"] == "ops-test-worker" and row["current_job"] is None and row["last_heartbeat"]
    assert set(row) >= {"name", "state", "current_job", "last_heartbeat"}
    assert body["send_rate"] == 0
    assert body["prompt_funnel"] == {"shown": 2, "accepted": 1, "declined": 1, "denied": 0, "subscribed": 2}


def test_campaigns_newest_first_with_limit(client, store):
    ids = []
    for n in range(3):
        ids.append(make_campaign(store, f"story-{n}"))
        time.sleep(0.002)
    body = client.get("/admin/api/campaigns?limit=2", headers=BEARER).get_json()
    assert [c["id"] for c in body["campaigns"]] == [ids[2], ids[1]]
    assert set(body["campaigns"][0]) >= CAMPAIGN_KEYS
    assert len(client.get("/admin/api/campaigns?limit=500", headers=BEARER).get_json()["campaigns"]) == 3


@pytest.mark.parametrize("limit", ["0", "501", "abc", "-1", "2.5", "", "²", "١٢", "9" * 5000, "%00", "%C3%A9"])
def test_campaign_limit_is_validated(client, limit):
    response = client.get(f"/admin/api/campaigns?limit={limit}", headers=BEARER)
    assert response.status_code == 422
    assert response.get_json()["error"] == {
        "code": "invalid_field",
        "message": "limit must be a whole number from 1 to 500",
        "field": "limit",
    }


def test_campaign_detail_matches_contract(client, store):
    campaign_id = make_campaign(store, "walrus", CampaignState.SENDING)
    store.campaigns.set_targeted(campaign_id, 10)
    store.campaigns.add_counts(campaign_id, {"sent": 6, "failed": 1, "expired": 1}, {"http_410": 1, "http_403": 1})
    body = client.get(f"/admin/api/campaigns/{campaign_id}", headers=BEARER).get_json()
    assert set(body) >= CAMPAIGN_KEYS
    assert body["id"] == campaign_id and body["story"]["id"] == "walrus"
    assert (body["state"], body["targeted"], body["sent"], body["failed"], body["expired"]) == ("sending", 10, 6, 1, 1)
    assert body["errors"] == {"http_410": 1, "http_403": 1}
    assert body["started_at"] >= body["created_at"] and body["finished_at"] is None


def test_unknown_campaign_is_404_with_error_shape(client):
    for method, path in (("GET", "/admin/api/campaigns/nope"), ("POST", "/admin/api/campaigns/nope/cancel")):
        response = client.open(path, method=method, headers=BEARER)
        assert response.status_code == 404
        assert response.get_json()["error"]["code"] == "not_found"


def test_cancel_then_cancel_again_is_409(client, store):
    campaign_id = make_campaign(store, "to-cancel", CampaignState.SENDING)
    first = client.post(f"/admin/api/campaigns/{campaign_id}/cancel", headers=BEARER)
    assert first.status_code == 200
    assert first.get_json()["state"] == "cancelled" and first.get_json()["finished_at"] is not None
    second = client.post(f"/admin/api/campaigns/{campaign_id}/cancel", headers=BEARER)
    assert second.status_code == 409 and second.get_json()["error"]["code"] == "conflict"
    done = make_campaign(store, "already-done", CampaignState.DONE)
    assert client.post(f"/admin/api/campaigns/{done}/cancel", headers=BEARER).status_code == 409


def test_failed_jobs_list_retry_and_delete(client, redis_client, settings):
    first = make_failed_job(redis_client, settings.queue_name, "first failure")
    second = make_failed_job(redis_client, settings.queue_name, "second failure")
    jobs = client.get("/admin/api/failed-jobs", headers=BEARER).get_json()["jobs"]
    assert [j["id"] for j in jobs] == [second, first]
    assert jobs[1]["error"] == "RuntimeError: first failure"
    assert jobs[1]["queue"] == "storypush" and jobs[1]["function"] == "tests.helpers.jobs.explode"
    overview = client.get("/admin/api/overview", headers=BEARER).get_json()
    assert overview["queues"][0]["failed"] == 2

    retried = client.post(f"/admin/api/failed-jobs/{first}/retry", headers=BEARER)
    assert retried.status_code == 200
    assert first in Queue(settings.queue_name, connection=redis_client).job_ids
    deleted = client.post(f"/admin/api/failed-jobs/{second}/delete", headers=BEARER)
    assert deleted.status_code == 200
    assert client.get("/admin/api/failed-jobs", headers=BEARER).get_json()["jobs"] == []
    assert not Job.exists(second, connection=redis_client)
    for action in ("retry", "delete"):
        response = client.post(f"/admin/api/failed-jobs/{second}/{action}", headers=BEARER)
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"


def test_send_rate_points(client, store):
    from service.store.metrics_store import PushTally

    tally = PushTally()
    for _ in range(120):
        tally.add("fcm", "sent", 0.02)
    now = time.time()
    store.metrics.record_pushes(tally, now=now - 60)
    points = client.get("/admin/api/send-rate?minutes=60", headers=BEARER).get_json()["points"]
    assert len(points) == 60
    assert points[-2]["rate"] == 2.0 and points[-1]["rate"] == 0
    assert points[-1]["minute"] - points[0]["minute"] == 59 * 60
    assert client.get("/admin/api/send-rate?minutes=0", headers=BEARER).status_code == 422


def test_dashboard_pages_render(client, store):
    campaign_id = make_campaign(store, "page-story", title="Walrus <script>alert(1)</script>")
    sign_in(client)
    assert 'id="campaigns"' in client.get("/admin").get_data(as_text=True)
    page = client.get(f"/admin/campaigns/{campaign_id}").get_data(as_text=True)
    assert "Walrus &lt;script&gt;" in page and "<script>alert" not in page
    assert client.get("/admin/campaigns/unknown").status_code == 404
    assert client.get("/admin/assets/dashboard.js").status_code == 200
    assert client.get("/admin/assets/base.html").status_code == 404


# -- hostile input ---------------------------------------------------------------------------


@pytest.mark.parametrize("minutes", ["²", "١٢", "0", "121", "9" * 5000, "1e3", " 5"])
def test_send_rate_minutes_are_validated_never_500(client, minutes):
    response = client.get("/admin/api/send-rate", query_string={"minutes": minutes}, headers=BEARER)
    assert response.status_code == 422 and response.get_json()["error"]["field"] == "minutes"


@pytest.mark.parametrize("id_", ["é", "%ED%A0%80", "x" * 4000, "..%2F..%2Fetc", "%00", "a b"])
def test_odd_campaign_and_job_ids_are_404_never_500(client, id_):
    for method, path in (
        ("GET", f"/admin/api/campaigns/{id_}"),
        ("POST", f"/admin/api/campaigns/{id_}/cancel"),
        ("POST", f"/admin/api/failed-jobs/{id_}/retry"),
        ("POST", f"/admin/api/failed-jobs/{id_}/delete"),
        ("GET", f"/admin/campaigns/{id_}"),
    ):
        response = client.open(path, method=method, headers=BEARER)
        assert response.status_code == 404, (path, response.status_code)


@pytest.mark.parametrize(
    "cookie", ["", "é", "x" * 3000, "eyJjc3JmIjoxfQ.bad", ".", "..", "\\x00", "eyJjc3JmIjoiZSJ9.Zz.zzz"]
)
def test_garbage_session_cookies_are_401_never_500(client, cookie):
    client.set_cookie("sp_admin", cookie, path="/admin")
    assert client.get("/admin/api/campaigns").status_code == 401


@pytest.mark.parametrize("header", ["Bearer é", "Bearer " + "x" * 5000, "Bearer", "bearer  ", "Basic Zm9vOmJhcg=="])
def test_odd_authorization_headers_are_401_never_500(client, header):
    assert client.get("/admin/api/campaigns", headers={"Authorization": header}).status_code == 401

"""`/metrics` after a real fan-out (real Redis, RQ jobs, HTTPS push-service simulator), and JSON logs.

Every counter lives in Redis, so a second app (another gunicorn worker, another
machine) must scrape exactly the same figures as the first.
"""

from __future__ import annotations

import json
import time

from service import create_app
from service.store import keys
from tests.helpers.admin import BEARER
from tests.helpers.cms import STORY, post, publish
from tests.helpers.fanout import drain, subscribe
from tests.helpers.metrics import scrape, value


def test_metrics_after_a_real_fan_out(fanout, sim, vapid_key, webhook_secret, redis_client, json_logs):
    client = fanout.test_client()
    subs = sim.mint(12, vapid_key.public_bytes)
    subscribe(client, subs[:9], ["animals"])
    subscribe(client, subs[9:], ["animals", "sport"])
    sim.fail(subs[0]["endpoint"], [410])
    sim.fail(subs[1]["endpoint"], [403])
    campaign = publish(fanout, webhook_secret)
    drain(redis_client, "storypush")
    assert fanout.extensions["storypush"].store.campaigns.get(campaign)["state"] == "done"

    samples = scrape(client)
    origin = sim.origin.removeprefix("https://")  # the STORYPUSH_PUSH_HOSTS entry it matched
    assert value(samples, "storypush_pushes_total", result="sent", origin=origin) == 10
    assert value(samples, "storypush_pushes_total", result="expired", origin=origin) == 1
    assert value(samples, "storypush_pushes_total", result="failed", origin=origin) == 1
    assert value(samples, "storypush_push_duration_seconds_count") == 12
    assert value(samples, "storypush_push_duration_seconds_bucket", le="+Inf") == 12
    assert 0 < value(samples, "storypush_push_duration_seconds_sum") < 12 * 10
    assert value(samples, "storypush_campaign_duration_seconds_count") == 1
    assert value(samples, "storypush_webhook_calls_total", outcome="accepted") == 1
    assert value(samples, "storypush_subscribers_total") == 11  # the 410 removed one
    assert value(samples, "storypush_subscribers", topic="animals") == 11
    assert value(samples, "storypush_subscribers", topic="sport") == 3
    assert value(samples, "storypush_queue_jobs", queue="storypush", state="queued") == 0
    assert value(samples, "storypush_queue_jobs", queue="storypush", state="failed") == 0

    # another process (its own app, connections and registry) scrapes the same figures
    other = create_app(fanout.extensions["storypush"].settings).test_client()
    assert scrape(other) == samples
    overview = client.get("/admin/api/overview", headers=BEARER).get_json()
    assert overview["send_rate"] > 0

    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    assert {"time", "level", "logger", "message", "process"} <= set(lines[0])
    mine = [line for line in lines if line.get("campaign_id") == campaign]
    assert any(line["message"].startswith(f"campaign {campaign} done") for line in mine)
    refused = [line for line in mine if line.get("status") == 403]
    assert refused and refused[0]["level"] == "WARNING" and refused[0]["origin"] == origin
    assert all(line.get("job_id", "").startswith("sp-") for line in mine)
    text = json_logs.getvalue()
    for sub in subs:  # capability URLs and keys never reach the log
        assert sub["endpoint"] not in text and sub["endpoint"].rsplit("/", 1)[1] not in text
        assert sub["keys"]["auth"] not in text


def test_webhook_calls_are_counted_by_outcome(client, webhook_secret):
    assert post(client, webhook_secret, {"type": "story.published", "data": STORY}).status_code == 202
    assert post(client, webhook_secret, {"type": "story.published", "data": STORY}).status_code == 200
    for _ in range(2):  # a new message id for a known story, then a repeat of that message id
        again = post(client, webhook_secret, {"type": "story.published", "data": STORY}, message_id="msg_same")
        assert again.status_code == 200
    assert post(client, "whsec_" + "A" * 44, {"type": "story.published", "data": STORY}).status_code == 401
    bad = {"type": "story.published", "data": {**STORY, "url": "not a url"}}
    assert post(client, webhook_secret, bad).status_code == 422
    gone = {"type": "story.updated", "data": {**STORY, "id": "never-published"}}
    assert post(client, webhook_secret, gone).status_code == 404
    samples = scrape(client)
    counts = {o: value(samples, "storypush_webhook_calls_total", outcome=o) for o in ("accepted", "duplicate")}
    assert counts == {"accepted": 1, "duplicate": 3}
    assert value(samples, "storypush_webhook_calls_total", outcome="unauthorized") == 1
    assert value(samples, "storypush_webhook_calls_total", outcome="invalid") == 1
    assert value(samples, "storypush_webhook_calls_total", outcome="not_found") == 1


def test_metrics_need_no_auth_but_admin_does(client):
    assert client.get("/metrics").status_code == 200
    assert client.get("/admin/api/overview").status_code == 401


def test_a_metrics_token_guards_metrics_when_set(settings, vapid_key):
    token = "scrape-token-0123456789"
    client = create_app(settings.with_overrides(metrics_token=token)).test_client()
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": f"Basic {token}"}):
        refused = client.get("/metrics", headers=headers)
        assert refused.status_code == 401, headers
        assert refused.get_json()["error"]["code"] == "unauthorized"
    allowed = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert allowed.status_code == 200 and b"storypush_subscribers" in allowed.data
    # The admin token is a different secret: it does not open /metrics.
    assert client.get("/metrics", headers=BEARER).status_code == 401


def test_push_service_lanes_on_the_dashboard_and_in_metrics(client, store):
    """Workers report their lanes; the overview and /metrics show per origin the worst
    state, summed limits and queues, and event counts, dropping workers gone quiet."""
    metrics = store.metrics
    lane = {"origin": "fcm", "state": "open", "limit": 40, "in_flight": 10, "queued": 5}
    metrics.report_lanes("worker-1", [lane])
    metrics.report_lanes(
        "worker-2",
        [
            {**lane, "state": "throttled", "limit": 8, "in_flight": 0, "queued": 30},
            {"origin": "apple", "state": "circuit_open", "limit": 1, "in_flight": 0, "queued": 0},
        ],
    )
    metrics.report_lanes("worker-gone", [{**lane, "limit": 999}], now=time.time() - 60)
    metrics.record_lane_events(
        {
            ("fcm", "throttled"): 12,
            ("apple", "unreachable"): 5,
            ("apple", "circuit_opened"): 1,
            ("apple", "device_throttled"): 3,
        }
    )
    metrics.record_lane_events({("mozilla", "throttled"): 2, ("fcm", "throttled"): 1})
    rows = {row["origin"]: row for row in client.get("/admin/api/overview", headers=BEARER).get_json()["push_services"]}
    assert rows["fcm"] == {
        "origin": "fcm",
        "state": "throttled",
        "workers": {"open": 1, "throttled": 1},
        "limit": 48,
        "in_flight": 10,
        "queued": 35,
        "throttled": 13,
        "device_throttled": 0,
        "unreachable": 0,
        "circuit_opened": 0,
    }
    assert (rows["apple"]["state"], rows["apple"]["unreachable"], rows["apple"]["circuit_opened"]) == (
        "circuit_open",
        5,
        1,
    )
    assert (rows["mozilla"]["state"], rows["mozilla"]["throttled"]) == ("idle", 2)  # no worker sends there now
    samples = scrape(client)
    assert value(samples, "storypush_lane_limit", origin="fcm") == 48
    assert value(samples, "storypush_lane_queued", origin="fcm") == 35
    assert value(samples, "storypush_lane_state", origin="apple", state="circuit_open") == 1
    assert value(samples, "storypush_lane_state", origin="fcm", state="open") == 1
    assert value(samples, "storypush_lane_events_total", origin="fcm", event="throttled") == 13
    assert value(samples, "storypush_lane_events_total", origin="apple", event="circuit_opened") == 1
    assert value(samples, "storypush_lane_events_total", origin="apple", event="device_throttled") == 3
    assert "worker-gone" not in {k.decode() for k in store.client.hkeys(keys.LANE_REPORTS)}

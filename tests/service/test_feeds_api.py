"""Feeds for operators: the API (behind the admin token), the CLI, `/metrics`, logs and dashboard."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from service import create_app
from service.cli import main
from service.feeds import poll_job_id
from tests.helpers.admin import BEARER, sign_in
from tests.helpers.feed_documents import Item, ghost_rss
from tests.helpers.feeds import poll
from tests.helpers.metrics import scrape, value

CONTRACT_FIELDS = {"id", "url", "topics", "category_map", "every", "last_polled_at", "last_success_at", "last_error",
                   "failures", "entries_seen"}  # fmt: skip


@pytest.fixture
def app(feed_settings, vapid_key):
    app = create_app(feed_settings)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def services(app):
    return app.extensions["storypush"]


def entry(n: int) -> Item:
    return Item(key=f"api-{n}", title=f"API story {n}", link=f"https://publisher.example/api-{n}", categories=["News"])


def test_feeds_api_needs_the_admin_token(client, feed_server):
    body = {"url": feed_server.url("/rss/")}
    assert client.get("/admin/api/feeds").status_code == 401
    assert client.post("/admin/api/feeds", json=body).status_code == 401
    assert client.delete("/admin/api/feeds/f123").status_code == 401
    wrong = {"Authorization": "Bearer wrong-token-0123456789"}
    response = client.post("/admin/api/feeds", json=body, headers=wrong)
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "unauthorized"
    assert client.get("/admin/api/feeds", headers=BEARER).get_json() == {"feeds": []}


def test_a_signed_in_operator_needs_the_csrf_token_to_add_or_remove(client, feed_server):
    csrf = sign_in(client)
    body = {"url": feed_server.url("/rss/")}
    assert client.post("/admin/api/feeds", json=body).status_code == 403
    added = client.post("/admin/api/feeds", json=body, headers={"X-CSRF-Token": csrf})
    assert added.status_code == 201
    path = f"/admin/api/feeds/{added.get_json()['id']}"
    assert client.delete(path).status_code == 403
    assert client.delete(path, headers={"X-CSRF-Token": csrf}).status_code == 204


def test_add_list_show_and_remove(client, feed_server, services):
    feed_server.serve("/rss/", ghost_rss([entry(1)]))
    body = {"url": feed_server.url("/rss/"), "topics": ["news"], "category_map": {"Wildlife": "animals"}, "every": 30}
    response = client.post("/admin/api/feeds", json=body, headers=BEARER)
    assert response.status_code == 201
    feed = response.get_json()
    assert feed.keys() >= CONTRACT_FIELDS
    assert {k: feed[k] for k in ("url", "topics", "category_map", "every", "failures", "entries_seen")} == {
        **body, "failures": 0, "entries_seen": 0,
    }  # fmt: skip
    assert feed["last_polled_at"] is None and feed["last_success_at"] is None and feed["last_error"] is None
    assert re.fullmatch(r"f[0-9a-f]{12}", feed["id"])
    slot = services.store.feeds.current_slot(feed["id"])
    assert services.queue.job_ids == [poll_job_id(feed["id"], slot)]  # polled at once

    poll(services, feed["id"])
    listed = client.get("/admin/api/feeds", headers=BEARER).get_json()["feeds"]
    assert [f["id"] for f in listed] == [feed["id"]]
    assert listed[0]["entries_seen"] == 1 and listed[0]["last_success_at"] == listed[0]["last_polled_at"]
    assert listed[0]["title"] == "The Publisher"
    shown = client.get(f"/admin/api/feeds/{feed['id']}", headers=BEARER)
    assert shown.status_code == 200 and shown.get_json() == listed[0]

    assert client.delete(f"/admin/api/feeds/{feed['id']}", headers=BEARER).status_code == 204
    missing = client.delete(f"/admin/api/feeds/{feed['id']}", headers=BEARER)
    assert missing.status_code == 404 and missing.get_json()["error"]["field"] == "id"
    assert client.get(f"/admin/api/feeds/{feed['id']}", headers=BEARER).status_code == 404
    assert client.get("/admin/api/feeds", headers=BEARER).get_json() == {"feeds": []}


def test_defaults_and_the_text_form_of_the_category_map(client, feed_server):
    body = {"url": feed_server.url("/rss/"), "category_map": "Animals=animals, TV and Film=tv-and-film"}
    feed = client.post("/admin/api/feeds", json=body, headers=BEARER).get_json()
    assert feed["every"] == 120 and feed["topics"] == []
    assert feed["category_map"] == {"Animals": "animals", "TV and Film": "tv-and-film"}


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "url"),
     ({"url": ""}, "url"),
     ({"url": "http://publisher.example/feed"}, "url"),
     ({"url": "https://127.0.0.1/feed"}, "url"),
     ({"url": "https://169.254.169.254/latest/"}, "url"),
     ({"url": "javascript:alert(1)"}, "url"),
     ({"url": 42}, "url"),
     ({"url": "https://publisher.example/feed", "every": 5}, "every"),
     ({"url": "https://publisher.example/feed", "every": 86401}, "every"),
     ({"url": "https://publisher.example/feed", "every": "60"}, "every"),
     ({"url": "https://publisher.example/feed", "every": 12.5}, "every"),
     ({"url": "https://publisher.example/feed", "every": True}, "every"),
     ({"url": "https://publisher.example/feed", "topics": ["gardening"]}, "topics"),
     ({"url": "https://publisher.example/feed", "topics": "news"}, "topics"),
     ({"url": "https://publisher.example/feed", "category_map": {"Garden": "gardening"}}, "category_map"),
     ({"url": "https://publisher.example/feed", "category_map": "Animals"}, "category_map"),
     ({"url": "https://publisher.example/feed", "category_map": ["Animals=animals"]}, "category_map"),
     ({"url": "https://publisher.example/feed", "category_map": {"Animals": 1}}, "category_map")],
)  # fmt: skip
def test_bad_feeds_are_refused_naming_the_field(client, body, field):
    response = client.post("/admin/api/feeds", json=body, headers=BEARER)
    assert response.status_code == 422, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "invalid_field" and error["field"].split(".")[0] == field
    assert client.get("/admin/api/feeds", headers=BEARER).get_json() == {"feeds": []}


def test_not_json_and_the_same_url_twice(client, feed_server):
    assert client.post("/admin/api/feeds", data="url=x", headers=BEARER).status_code == 400
    assert client.post("/admin/api/feeds", json=["x"], headers=BEARER).status_code == 422
    body = {"url": feed_server.url("/rss/")}
    assert client.post("/admin/api/feeds", json=body, headers=BEARER).status_code == 201
    again = client.post("/admin/api/feeds", json=body, headers=BEARER)
    assert again.status_code == 409 and again.get_json()["error"]["field"] == "url"


def test_feed_metrics(client, feed_server, services):
    feed_server.serve("/good", ghost_rss([entry(1)]), etag='"e1"')
    feed_server.serve("/bad", "gone", status=410)
    good = client.post("/admin/api/feeds", json={"url": feed_server.url("/good"), "topics": ["news"]}, headers=BEARER)
    bad = client.post("/admin/api/feeds", json={"url": feed_server.url("/bad")}, headers=BEARER)
    good_id, bad_id = good.get_json()["id"], bad.get_json()["id"]
    for feed_id in (good_id, good_id, bad_id, bad_id):
        poll(services, feed_id)
    samples = scrape(client)
    assert value(samples, "storypush_feed_polls_total", feed=good_id, result="ok") == 1
    assert value(samples, "storypush_feed_polls_total", feed=good_id, result="not_modified") == 1
    assert value(samples, "storypush_feed_polls_total", feed=bad_id, result="failed") == 2
    assert value(samples, "storypush_feed_failures", feed=bad_id) == 2
    assert value(samples, "storypush_feed_failures", feed=good_id) == 0
    assert value(samples, "storypush_feed_entries_seen_total", feed=good_id) == 1
    assert value(samples, "storypush_feed_stories_total", feed=good_id) == 0
    last = services.store.feeds.get(good_id).last_success_at
    assert value(samples, "storypush_feed_last_success_timestamp_seconds", feed=good_id) == pytest.approx(last)
    assert ("storypush_feed_last_success_timestamp_seconds", (("feed", bad_id),)) not in samples


def test_a_failing_poll_is_logged_without_the_feed_url(client, feed_server, services, json_logs):
    feed_server.serve("/private?token=s3cret-subscriber-token", "nope", status=403)
    url = feed_server.url("/private?token=s3cret-subscriber-token")
    feed_id = client.post("/admin/api/feeds", json={"url": url}, headers=BEARER).get_json()["id"]
    poll(services, feed_id)
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    failed = [line for line in lines if line.get("reason") == "http_403"]
    assert failed and failed[0]["level"] == "WARNING" and failed[0]["feed_id"] == feed_id and failed[0]["count"] == 1
    assert "s3cret" not in json_logs.getvalue()
    assert "s3cret" not in (services.store.feeds.get(feed_id).last_error or "")


def test_dashboard_has_a_feeds_panel(client):
    sign_in(client)
    page = client.get("/admin").get_data(as_text=True)
    assert 'id="feeds"' in page and 'id="feed-form"' in page


# -- CLI -------------------------------------------------------------------------------------


@pytest.fixture
def cli(feed_settings, feed_server, monkeypatch):
    monkeypatch.setenv("REDIS_URL", feed_settings.redis_url)
    monkeypatch.setenv("STORYPUSH_DATA_DIR", str(feed_settings.data_dir))
    monkeypatch.setenv("STORYPUSH_FEED_HOSTS", feed_server.authority)
    monkeypatch.delenv("STORYPUSH_STORE_URL", raising=False)
    return CliRunner()


def test_cli_feeds_add_list_remove(cli, feed_server, services):
    url = feed_server.url("/rss/")
    mapping = "Animals=animals,TV and Film=tv-and-film"
    added = cli.invoke(
        main, ["feeds", "add", url, "--topic", "news", "--topic", "sport", "--category-map", mapping, "--every", "45"]
    )
    assert added.exit_code == 0, added.output
    feed_id = added.output.strip()
    feed = services.store.feeds.get(feed_id)
    assert (feed.url, feed.topics, feed.every) == (url, ("news", "sport"), 45)
    assert feed.category_map == {"Animals": "animals", "TV and Film": "tv-and-film"}
    assert services.queue.job_ids == [poll_job_id(feed_id, services.store.feeds.current_slot(feed_id))]

    listed = cli.invoke(main, ["feeds", "list"])
    assert listed.exit_code == 0 and feed_id in listed.output and url in listed.output
    assert "Animals=animals" in listed.output and "news, sport" in listed.output

    again = cli.invoke(main, ["feeds", "add", url])
    assert again.exit_code == 1 and "already polls this URL" in again.output
    removed = cli.invoke(main, ["feeds", "remove", feed_id])
    assert removed.exit_code == 0 and services.store.feeds.get(feed_id) is None
    assert cli.invoke(main, ["feeds", "remove", feed_id]).exit_code == 1
    assert cli.invoke(main, ["feeds", "list"]).output.strip() == "no feeds"


@pytest.mark.parametrize(
    ("args", "message"),
    [(["http://publisher.example/feed"], "url: must be https://"),
     (["https://10.0.0.1/feed"], "private or loopback"),
     (["https://publisher.example/feed", "--every", "3"], "every"),
     (["https://publisher.example/feed", "--topic", "gardening"], "unknown topic"),
     (["https://publisher.example/feed", "--category-map", "Garden"], "Category=topic")],
)  # fmt: skip
def test_cli_refuses_bad_feeds_with_the_reason(cli, args, message):
    result = cli.invoke(main, ["feeds", "add", *args])
    assert result.exit_code == 1 and message in result.output, result.output


def test_cli_lists_a_failing_feed_with_its_error(cli, feed_server, services):
    feed_server.serve("/rss/", "down", status=502)
    feed_id = cli.invoke(main, ["feeds", "add", feed_server.url("/rss/")]).output.strip()
    poll(services, feed_id)
    listed = cli.invoke(main, ["feeds", "list"]).output
    assert "failing: http_502: server answered 502" in listed
    assert cli.invoke(main, ["feeds", "--help"]).exit_code == 0

"""The dashboard's Feeds panel in headless Chromium: add a feed, watch its health, remove it."""

from __future__ import annotations

import pytest
from flask import Flask
from playwright.sync_api import expect

from service import create_app
from tests.helpers.browser import SCREENSHOTS, LiveServer, sign_in
from tests.helpers.feed_documents import Item, ghost_rss
from tests.helpers.feeds import poll

pytestmark = pytest.mark.browser


@pytest.fixture
def app(feed_settings, vapid_key) -> Flask:
    """The app trusting the local feed server, as STORYPUSH_FEED_HOSTS would."""
    app = create_app(feed_settings)
    app.config["TESTING"] = True
    return app


def test_feeds_panel_adds_shows_health_and_removes(new_context, live_server: LiveServer, app, feed_server) -> None:
    services = app.extensions["storypush"]
    story = Item(key="x", title="x", link="https://publisher.example/x", categories=["News"])
    feed_server.serve("/rss/", ghost_rss([story], title="Walrus <img src=x onerror=alert(1)> Weekly"))
    page = sign_in(new_context(), live_server)
    expect(page.locator("#feeds")).to_contain_text("No feeds")

    form = page.locator("#feed-form")
    form.locator("[name=url]").fill("http://publisher.example/feed")
    form.get_by_role("button", name="Add feed").click()
    expect(page.locator("#feed-form-error")).to_contain_text("must be https://")

    form.locator("[name=url]").fill(feed_server.url("/rss/"))
    form.locator("[name=topics]").fill("news, animals")
    form.locator("[name=category_map]").fill("Wildlife=animals")
    form.locator("[name=every]").fill("30")
    form.get_by_role("button", name="Add feed").click()
    expect(page.locator("#feeds tr[data-feed]")).to_have_count(1)  # the POST has answered
    (feed,) = services.store.feeds.list()
    row = page.locator(f'tr[data-feed="{feed.id_}"]')
    expect(row.locator(".badge")).to_have_text("waiting")
    expect(page.locator("#feed-form-error")).to_have_text("")
    assert (feed.topics, feed.category_map, feed.every) == (("news", "animals"), {"Wildlife": "animals"}, 30)
    expect(row).to_contain_text("news, animals, Wildlife→animals")

    poll(services, feed.id_)
    expect(row.locator(".badge")).to_have_text("ok", timeout=6000)
    # The feed's own title is data from the publisher: shown as text, never as markup.
    expect(row).to_contain_text("Walrus <img src=x onerror=alert(1)> Weekly")
    assert page.locator("#feeds img").count() == 0

    feed_server.serve("/rss/", "down for maintenance", status=503)
    poll(services, feed.id_)
    expect(row.locator(".badge")).to_have_text("failing ×1", timeout=6000)
    expect(row).to_contain_text("http_503: server answered 503")
    page.screenshot(path=str(SCREENSHOTS / "dashboard-feeds.png"), full_page=True)

    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Remove").click()
    expect(row).to_have_count(0)
    assert services.store.feeds.list() == []

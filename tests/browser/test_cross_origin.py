"""The real deployment shape: a publisher's site on one origin embeds prompt.js from the
storypush service on another, hosts its own copy of sw.js, and the worker reports to the
API named in its `?api=` parameter (CORS on both sides)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from flask import Flask, Response, send_from_directory
from playwright.sync_api import expect

from service import STATIC_DIR, create_app
from service.settings import Settings
from service.store import Store
from service.vapid import VapidKey
from tests.helpers.browser import FAKE_SUBSCRIBE_JS, LiveServer, prompt_state, serving, wait_until

pytestmark = pytest.mark.browser

STORY_HTML = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Walrus</title></head>
<body><h1>Viewers Are Being Broken By The Walrus Scene From Netflix's Our Planet</h1>
<script src="{api}/static/prompt.js" data-api="{api}" data-topics="animals" defer></script></body></html>"""


def publisher_app(api: dict[str, str]) -> Flask:
    """A publisher's site: one story page and its copy of sw.js at the root."""
    site = Flask("publisher")

    @site.get("/news/walrus")
    def story() -> str:
        return STORY_HTML.format(api=api["url"])

    @site.get("/sw.js")
    def service_worker() -> Response:
        return send_from_directory(STATIC_DIR, "sw.js", mimetype="application/javascript")

    return site


@dataclass
class Sites:
    publisher: LiveServer  # http://localhost:P
    service: LiveServer  # http://127.0.0.1:Q, allowing the publisher's origin (CORS)
    store: Store


@pytest.fixture
def sites(settings: Settings, vapid_key: VapidKey) -> Iterator[Sites]:
    """Two origins on one machine: "localhost" and "127.0.0.1" are different sites to a browser."""
    api: dict[str, str] = {}
    with serving(publisher_app(api)) as publisher:
        publisher.url = publisher.url.replace("127.0.0.1", "localhost")
        app = create_app(settings.with_overrides(allowed_origins=(publisher.url,)))
        with serving(app) as service:
            api["url"] = service.url
            yield Sites(publisher, service, app.extensions["storypush"].store)


def test_embedded_on_another_origin(new_context, sites: Sites) -> None:
    publisher, service, store = sites.publisher, sites.service, sites.store
    context = new_context()
    context.add_init_script(FAKE_SUBSCRIBE_JS)
    page = context.new_page()
    page.goto(publisher.url + "/news/walrus")
    assert prompt_state(page) == "shown"
    context.grant_permissions(["notifications"], origin=publisher.url)
    page.get_by_role("button", name="OK").click()
    page.wait_for_function("window.storypush.state === 'subscribed'")
    expect(page.locator("#storypush-prompt")).to_have_count(0)

    endpoint = page.evaluate("self.__fakePush.current.endpoint")
    found = store.subscriptions.get_by_endpoint(endpoint)
    assert found is not None and found[1].topics == ("animals",)
    assert store.prompt_funnel() == {"shown": 1, "accepted": 1, "declined": 0, "denied": 0}

    # The publisher's worker, told where the API is, reports the receipt across origins.
    cdp = context.new_cdp_session(page)
    registrations: list[dict] = []
    cdp.on("ServiceWorker.workerRegistrationUpdated", lambda event: registrations.extend(event["registrations"]))
    cdp.send("ServiceWorker.enable")
    wait_until(lambda: registrations, message="the registration", page=page)
    worker = context.service_workers[0]
    assert worker.url.startswith(publisher.url + "/sw.js?api=")
    assert worker.evaluate("self.storypush.api") == service.url
    payload = {"v": 1, "campaign": "c1", "title": "Walrus", "body": "b", "url": publisher.url + "/news/walrus",
               "tag": "walrus-our-planet", "receipt": "rc_cross_origin"}  # fmt: skip
    cdp.send(
        "ServiceWorker.deliverPushMessage",
        {"origin": publisher.url, "registrationId": registrations[0]["registrationId"], "data": json.dumps(payload)},
    )
    service.wait_for_post("/api/v1/events", {"type": "delivered", "receipt": "rc_cross_origin"})

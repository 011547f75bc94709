"""The whole path in a real headless Firefox, nothing stubbed in the browser.

/demo → the banner → OK → Firefox's own permission doorhanger → Allow → a real
`pushManager.subscribe()` against a local autopush (tests/autopush) → the subscription
POSTed to the API (gunicorn) → a signed `story.published` webhook → a real RQ worker
encrypts and POSTs to the autopush HTTPS endpoint → Firefox decrypts (ack code 100) →
sw.js shows the notification and posts its `delivered` receipt → the campaign counts it.

Firefox is started with Marionette on a fresh profile; prefs keep it off Mozilla's
servers. If it cannot start, the test fails (no skip).
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from marionette_driver import By, Wait
from marionette_driver.marionette import Marionette

from service.settings import Settings
from tests.autopush import AutopushServer
from tests.helpers.cms import STORY, publish_over_http
from tests.helpers.processes import Stack, free_port, process_env, running_stack, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FIREFOX = os.environ.get("STORYPUSH_FIREFOX", "/usr/bin/firefox-esr")
NOWHERE = "http://127.0.0.1:9/"  # the discard port: refused at once, never the internet

PREFS: dict[str, object] = {
    # Push over our autopush; service workers; notifications without a desktop daemon.
    "dom.push.enabled": True,
    "dom.push.connection.enabled": True,
    "dom.push.testing.allowInsecureServerURL": True,
    "dom.push.requestTimeout": 10_000,
    "dom.serviceWorkers.enabled": True,
    "dom.serviceWorkers.testing.enabled": True,
    "alerts.useSystemBackend": False,
    "security.notification_enable_delay": 0,
    # No traffic to Mozilla (updates, telemetry, remote settings, Nimbus, safe browsing…).
    "network.proxy.type": 0,
    "app.update.disabledForTesting": True,
    "app.update.auto": False,
    "app.normandy.enabled": False,
    "app.shield.optoutstudies.enabled": False,
    "messaging-system.rsexperimentloader.enabled": False,
    "services.settings.server": NOWHERE + "v1",
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.server": NOWHERE,
    "datareporting.policy.dataSubmissionEnabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.provider.mozilla.updateURL": "",
    "browser.safebrowsing.provider.google4.updateURL": "",
    "extensions.blocklist.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.trr.mode": 5,
    "network.dns.disablePrefetch": True,
    "network.prefetch-next": False,
    "network.http.speculative-parallel-limit": 0,
    "browser.newtabpage.enabled": False,
    "browser.startup.homepage": "about:blank",
    "browser.startup.page": 0,
    "browser.aboutwelcome.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "identity.fxaccounts.enabled": False,
    "browser.contentblocking.report.lockwise.enabled": False,
    "geo.provider.network.url": "",
    "browser.backup.enabled": False,
    "browser.backup.scheduled.enabled": False,
}

# Chrome context: the permission doorhanger for this tab, or null while it is not there.
DOORHANGER_JS = """
const notification = PopupNotifications.getNotification("web-notifications", gBrowser.selectedBrowser);
const panel = PopupNotifications.panel;
if (!notification || panel.state !== "open") return null;
const element = [...panel.children].find((child) => child.notification === notification);
return element ? element.getAttribute("label") || "web-notifications" : null;
"""
CLICK_ALLOW_JS = """
const notification = PopupNotifications.getNotification("web-notifications", gBrowser.selectedBrowser);
const element = [...PopupNotifications.panel.children].find((child) => child.notification === notification);
element.button.click();
"""

# True once the banner's slide-in has run and its OK button lies inside the viewport.
BANNER_SETTLED_JS = """
const box = document.getElementById("storypush-prompt");
if (!box || box.getAnimations().some((a) => a.playState !== "finished")) return false;
const r = box.querySelector("button.sp-ok").getBoundingClientRect();
return r.width > 0 && r.top >= 0 && r.bottom <= window.innerHeight;
"""

SHOWN_NOTIFICATIONS_JS = """
const [done] = arguments;
navigator.serviceWorker.ready
  .then((reg) => reg.getNotifications())
  .then((all) => done(all.map((n) => ({title: n.title, body: n.body, tag: n.tag, data: n.data}))),
        (err) => done({error: String(err)}));
"""


@pytest.fixture
def autopush(tmp_path: Path) -> Iterator[AutopushServer]:
    with AutopushServer(tmp_path) as server:
        yield server


@pytest.fixture
def firefox_stack(settings: Settings, vapid_key, autopush: AutopushServer, tmp_path: Path) -> Iterator[Stack]:
    """gunicorn + one RQ worker that accept and trust our autopush (as for real push services)."""
    with running_stack(process_env(settings, autopush.authority, autopush.ca_file), tmp_path) as stack:
        yield stack


@pytest.fixture
def firefox(autopush: AutopushServer, tmp_path: Path) -> Iterator[Marionette]:
    """Headless Firefox on a fresh profile, connected to our autopush before any page opens."""
    assert shutil.which(FIREFOX), f"Firefox not found at {FIREFOX}"
    log = tmp_path / "gecko.log"
    prefs = PREFS | {"dom.push.serverURL": autopush.ws_url}
    client = Marionette(
        host="127.0.0.1",
        port=free_port(),
        bin=FIREFOX,
        headless=True,
        prefs=prefs,
        gecko_log=str(log),
        workspace=str(tmp_path),
        startup_timeout=60,
    )
    try:
        client.start_session()
        client.timeout.script = 30
        # subscribe() made before the push service's handshake never settles.
        autopush.wait(lambda: autopush.hellos, 30, "Firefox's hello")
        yield client
    except BaseException:
        if log.exists():
            print(log.read_text(errors="replace")[-6000:])
        raise
    finally:
        try:
            client.delete_session()
        finally:
            client.cleanup()
            # mozprofile deletes profiles again in __del__; let that happen now, not during
            # interpreter shutdown (where it prints "ImportError: sys.meta_path is None").
            del client
            gc.collect()


def remote_addresses(client: Marionette) -> set[str]:
    """Where Firefox's processes are connected to (or trying to connect to) right now."""
    browser = psutil.Process(client.instance.runner.process_handler.pid)
    addresses = set()
    for process in [browser, *browser.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            addresses |= {c.raddr.ip for c in process.net_connections("inet") if c.raddr}
    return addresses


def page_js(client: Marionette, script: str, asynchronous: bool = False):
    """Run `script` in the page's own scope (the default sandbox hides page globals)."""
    run = client.execute_async_script if asynchronous else client.execute_script
    return run(script, sandbox=None)


def page_state(client: Marionette) -> str | None:
    return page_js(client, "return window.storypush ? window.storypush.state : null")


def test_ok_allow_subscribe_publish_notification_and_delivered_receipt(
    firefox: Marionette, firefox_stack: Stack, autopush: AutopushServer, store, webhook_secret: str, vapid_key
):
    started = time.monotonic()
    firefox_stack.start_web()
    firefox_stack.start_worker()

    # The story page: permission is still "default", so the banner appears.
    firefox.navigate(firefox_stack.base + "/demo")
    Wait(firefox, timeout=15).until(lambda c: page_state(c) == "shown", message="the banner")
    assert page_js(firefox, "return Notification.permission") == "default"
    checked = page_js(
        firefox, "return [...document.querySelectorAll('#storypush-prompt input:checked')].map((b) => b.value)"
    )
    assert checked == ["animals", "tv-and-film"]

    # The banner slides in; Marionette refuses to click what is still moving below the
    # viewport ("could not be scrolled into view"), which a slow machine can catch.
    Wait(firefox, timeout=15).until(lambda c: page_js(c, BANNER_SETTLED_JS), message="the banner to settle")
    # OK (a real click: the permission request needs the user's gesture) …
    firefox.find_element(By.CSS_SELECTOR, "#storypush-prompt button.sp-ok").click()
    # … then Allow in Firefox's own doorhanger.
    with firefox.using_context(firefox.CONTEXT_CHROME):
        Wait(firefox, timeout=15).until(lambda c: c.execute_script(DOORHANGER_JS), message="the permission doorhanger")
        firefox.execute_script(CLICK_ALLOW_JS)
    Wait(firefox, timeout=30).until(lambda c: page_state(c) in ("subscribed", "failed"), message="subscribed")
    hint = page_js(firefox, "const h = document.querySelector('#storypush-prompt .sp-hint'); return h && h.textContent")
    assert page_state(firefox) == "subscribed", hint
    assert page_js(firefox, "return Notification.permission") == "granted"

    # Firefox registered one channel, with our VAPID key, and the API stored its endpoint.
    assert len(autopush.registrations) == 1
    channel, key = next(iter(autopush.registrations.items()))
    assert key == vapid_key.public_bytes
    endpoint = f"{autopush.origin}/wpush/{channel}"
    assert (
        page_js(
            firefox,
            "const [done] = arguments;"
            "navigator.serviceWorker.ready.then((r) => r.pushManager.getSubscription()).then((s) => done(s.endpoint));",
            asynchronous=True,
        )
        == endpoint
    )
    stored = store.subscriptions.get_by_endpoint(endpoint)
    assert stored is not None, "the API did not store Firefox's subscription"
    assert sorted(stored[1].topics) == ["animals", "tv-and-film"] and len(stored[1].auth) == 16

    # The CMS publishes; the worker sends; Firefox decrypts; sw.js shows it and reports.
    campaign = publish_over_http(firefox_stack.base, webhook_secret, STORY)
    autopush.wait(lambda: autopush.acks or autopush.nacks, 60, "Firefox's ack")
    assert [(a["channelID"], a["code"]) for a in autopush.acks] == [(channel, 100)], (autopush.acks, autopush.nacks)
    assert not autopush.refused and len(autopush.pushes) == 1
    push = autopush.pushes[0]
    assert push.headers["Content-Encoding"] == "aes128gcm" and int(push.headers["TTL"]) == STORY["ttl"]
    assert push.claims["aud"] == autopush.origin

    wait_for(lambda: (store.campaigns.get(campaign) or {}).get("delivered") == 1, 30, "the delivered receipt")
    state = store.campaigns.get(campaign)
    assert (state["targeted"], state["sent"], state["failed"], state["delivered"]) == (1, 1, 0, 1)

    shown = page_js(firefox, SHOWN_NOTIFICATIONS_JS, asynchronous=True)
    assert [(n["title"], n["body"], n["tag"]) for n in shown] == [(STORY["title"], STORY["body"], STORY["id"])]
    assert shown[0]["data"]["url"] == STORY["url"] and shown[0]["data"]["campaign"] == campaign
    assert remote_addresses(firefox) <= {"127.0.0.1"}, "Firefox talks to the internet"
    print(f"firefox e2e: {time.monotonic() - started:.1f}s after Firefox was up")

"""For the real-browser tests: browser settings, page stubs, a recording live server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from flask import Flask, request
from playwright.sync_api import Browser, BrowserContext, Page, expect
from werkzeug.serving import make_server

from tests.helpers.admin import ADMIN_TOKEN

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"

# Chromium's own pushManager.subscribe() asks Google's servers and never settles offline,
# so the page gets a subscription with a real P-256 key (WebCrypto) and a 16-byte auth
# secret on an FCM endpoint: exactly what the server validates. Calls are recorded.
FAKE_SUBSCRIBE_JS = """
(() => {
  const b64url = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)))
    .replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
  const fake = self.__fakePush = { calls: [], current: null };
  fake.make = async (applicationServerKey) => {
    const pair = await crypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, true, ["deriveBits"]);
    const p256dh = b64url(await crypto.subtle.exportKey("raw", pair.publicKey));
    const auth = b64url(crypto.getRandomValues(new Uint8Array(16)));
    const endpoint = "https://fcm.googleapis.com/fcm/send/" + b64url(crypto.getRandomValues(new Uint8Array(96)));
    const options = { userVisibleOnly: true, applicationServerKey };
    const json = { endpoint, expirationTime: null, keys: { p256dh, auth } };
    return { endpoint, expirationTime: null, options, toJSON: () => json,
             unsubscribe: async () => { fake.current = null; return true; } };
  };
  PushManager.prototype.subscribe = async function (options) {
    const key = new Uint8Array(options.applicationServerKey);
    fake.calls.push({ userVisibleOnly: options.userVisibleOnly, applicationServerKey: b64url(key) });
    if (!fake.current) fake.current = await fake.make(key.buffer);
    return fake.current;
  };
})();
"""

# Additionally a subscription that already exists when the page loads (the same one on
# every page view of the context: it is kept in localStorage under a test-only key).
FAKE_EXISTING_JS = """
(() => {
  const fake = self.__fakePush;
  const saved = JSON.parse(localStorage.getItem("test:subscription") || "null");
  const ready = (saved ? Promise.resolve(saved) : fake.make(new Uint8Array(65).buffer).then((sub) => sub.toJSON()))
    .then((json) => {
      localStorage.setItem("test:subscription", JSON.stringify(json));
      fake.current = { endpoint: json.endpoint, expirationTime: null, options: {}, toJSON: () => json };
    });
  PushManager.prototype.getSubscription = async function () { await ready; return fake.current; };
})();
"""


@dataclass
class LiveServer:
    """The app on a real socket, plus every API POST it received (recorded before routing,
    so routes another engineer has not finished yet still show what browsers sent)."""

    url: str
    posts: list[tuple[str, object]] = field(default_factory=list)

    def bodies(self, path: str) -> list[object]:
        return [body for seen, body in list(self.posts) if seen == path]

    def wait_for_post(self, path: str, body: object, timeout: float = 10.0) -> None:
        """Wait until `body` was POSTed to `path`; fail listing what did arrive."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if body in self.bodies(path):
                return
            time.sleep(0.05)
        pytest.fail(f"no POST {path} {body!r}; got {self.posts!r}")


@contextmanager
def serving(app: Flask) -> Iterator[LiveServer]:
    """Run `app` on a random 127.0.0.1 port in a thread, recording API POSTs."""
    recorder = LiveServer(url="")

    @app.before_request
    def _record() -> None:
        if request.method == "POST" and request.path.startswith("/api/"):
            recorder.posts.append((request.path, request.get_json(silent=True)))

    server = make_server("127.0.0.1", 0, app, threaded=True)
    recorder.url = f"http://127.0.0.1:{server.server_port}"
    # A short poll interval: shutdown() waits for it, once per test.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="live-server", daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        thread.join(timeout=5)


def deny_notifications(chromium: Browser, page: Page, origin: str) -> None:
    """Set the notification permission to `denied`, as a reader's "Block" would (CDP)."""
    info = page.context.new_cdp_session(page).send("Target.getTargetInfo")
    chromium.new_browser_cdp_session().send(
        "Browser.setPermission",
        {
            "permission": {"name": "notifications"},
            "setting": "denied",
            "origin": origin,
            "browserContextId": info["targetInfo"]["browserContextId"],
        },
    )


def prompt_state(page: Page) -> str:
    """What prompt.js decided for this page view (waits for `storypush.ready`)."""
    return page.evaluate("window.storypush.ready")


def wait_until(
    check: Callable[[], object], timeout: float = 10.0, message: str = "condition", page: Page | None = None
) -> object:
    """Poll `check` until it returns something truthy.

    Pass `page` when the check reads Playwright events: the sync API only dispatches
    them while it is called, so the wait goes through the page instead of sleeping.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if page is None:
            time.sleep(0.05)
        else:
            page.wait_for_timeout(50)
    pytest.fail(f"timed out waiting for {message}")


def sign_in(context: BrowserContext, server: LiveServer, token: str = ADMIN_TOKEN) -> Page:
    page = context.new_page()
    page.goto(server.url + "/admin")
    expect(page).to_have_url(server.url + "/admin/login?next=/admin")
    page.fill("#token", token)
    page.click("button[type=submit]")
    return page

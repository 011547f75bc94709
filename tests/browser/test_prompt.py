"""prompt.js in headless Chromium on the demo story page, against the real app and Redis."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect

from service.store import Store
from service.vapid import VapidKey
from tests.helpers.browser import (
    FAKE_EXISTING_JS,
    FAKE_SUBSCRIBE_JS,
    SCREENSHOTS,
    LiveServer,
    deny_notifications,
    prompt_state,
    wait_until,
)

pytestmark = pytest.mark.browser

BANNER = "#storypush-prompt"
DAY_MS = 86_400_000


def open_demo(context: BrowserContext, server: LiveServer) -> Page:
    page = context.new_page()
    page.goto(server.url + "/demo")
    return page


def declined_ago(page: Page, ms: int) -> None:
    """Pretend "Not now" was pressed `ms` milliseconds ago, and load the page again."""
    page.evaluate(f"localStorage.setItem('storypush:notNowAt', String(Date.now() - {ms}))")
    page.reload()


def funnel_is(store: Store, **expected: int) -> Callable[[], bool]:
    """A check that the server's prompt funnel has (at least these) exact counts."""
    return lambda: all(store.prompt_funnel()[kind] == n for kind, n in expected.items())


def test_banner_shown_when_permission_is_default(new_context, live_server: LiveServer, store: Store) -> None:
    page = open_demo(new_context(), live_server)
    assert prompt_state(page) == "shown"
    banner = page.locator(BANNER)
    expect(banner).to_be_visible()
    expect(page.get_by_role("dialog", name="Story reminders")).to_be_visible()
    described = page.locator("#" + banner.get_attribute("aria-describedby"))
    expect(described).to_have_text(
        "To make sure you never miss out on your favourite NEW stories, "
        "we're happy to send you some reminders. Click 'OK' then 'Allow'"
    )
    # data-topics="animals,tv-and-film": only those two, both chosen.
    expect(page.get_by_role("checkbox")).to_have_count(2)
    expect(page.get_by_role("checkbox", name="Animals")).to_be_checked()
    expect(page.get_by_role("checkbox", name="TV and Film")).to_be_checked()
    expect(page.get_by_role("button", name="OK")).to_be_visible()
    expect(page.get_by_role("button", name="Not now")).to_be_visible()
    # A fixed overlay: the article does not move when it goes away.
    assert banner.evaluate("el => getComputedStyle(el).position") == "fixed"
    top_with = page.locator("h1").evaluate("el => el.getBoundingClientRect().top")
    banner.evaluate("el => el.style.display = 'none'")
    assert page.locator("h1").evaluate("el => el.getBoundingClientRect().top") == top_with
    wait_until(funnel_is(store, shown=1, accepted=0, declined=0, denied=0), message="shown counted")
    # Nothing is asked of the browser before OK.
    assert page.evaluate("Notification.permission") == "default"


def test_not_shown_when_denied(chromium: Browser, new_context, live_server: LiveServer, store: Store) -> None:
    page = new_context().new_page()
    deny_notifications(chromium, page, live_server.url)
    page.goto(live_server.url + "/demo")
    assert prompt_state(page) == "denied"
    expect(page.locator(BANNER)).to_have_count(0)
    assert store.prompt_funnel()["shown"] == 0


def test_not_shown_when_granted(new_context, live_server: LiveServer, store: Store) -> None:
    context = new_context()
    context.grant_permissions(["notifications"], origin=live_server.url)
    page = open_demo(context, live_server)
    assert prompt_state(page) == "granted"
    expect(page.locator(BANNER)).to_have_count(0)
    assert store.prompt_funnel()["shown"] == 0
    # No subscription in this browser and none chosen here: nothing to send.
    assert live_server.bodies("/api/v1/subscriptions") == []


def test_granted_resends_the_current_subscription_once(new_context, live_server: LiveServer, store: Store) -> None:
    context = new_context()
    context.grant_permissions(["notifications"], origin=live_server.url)
    context.add_init_script(FAKE_SUBSCRIBE_JS + FAKE_EXISTING_JS)
    context.add_init_script("localStorage.setItem('storypush:topics', JSON.stringify(['tv-and-film']))")
    page = open_demo(context, live_server)
    assert prompt_state(page) == "granted"
    endpoint = page.evaluate("self.__fakePush.current.endpoint")
    found = store.subscriptions.get_by_endpoint(endpoint)
    assert found is not None
    assert found[1].topics == ("tv-and-film",)
    # The next page view finds it in sync and stays quiet.
    page.reload()
    assert prompt_state(page) == "granted"
    assert len(live_server.bodies("/api/v1/subscriptions")) == 1


def test_granted_renews_a_lost_subscription(
    new_context, live_server: LiveServer, store: Store, vapid_key: VapidKey
) -> None:
    """Said OK earlier (topics remembered) but the browser has no subscription any more."""
    context = new_context()
    context.grant_permissions(["notifications"], origin=live_server.url)
    context.add_init_script(FAKE_SUBSCRIBE_JS)
    context.add_init_script("localStorage.setItem('storypush:topics', JSON.stringify(['animals']))")
    page = open_demo(context, live_server)
    assert prompt_state(page) == "granted"
    assert page.evaluate("self.__fakePush.calls") == [
        {"userVisibleOnly": True, "applicationServerKey": vapid_key.public_key_b64}
    ]
    found = store.subscriptions.get_by_endpoint(page.evaluate("self.__fakePush.current.endpoint"))
    assert found is not None and found[1].topics == ("animals",)
    assert store.prompt_funnel()["shown"] == 0


@pytest.mark.parametrize("missing", ["Navigator.prototype.serviceWorker", "window.PushManager", "window.Notification"])
def test_not_shown_without_push_support(missing: str, new_context, live_server: LiveServer, store: Store) -> None:
    context = new_context()
    context.add_init_script(f"delete {missing};")
    page = open_demo(context, live_server)
    assert prompt_state(page) == "unsupported"
    expect(page.locator(BANNER)).to_have_count(0)
    assert store.prompt_funnel()["shown"] == 0


def test_not_now_snoozes_for_seven_days(new_context, live_server: LiveServer, store: Store) -> None:
    page = open_demo(new_context(), live_server)
    assert prompt_state(page) == "shown"
    page.get_by_role("button", name="Not now").click()
    expect(page.locator(BANNER)).to_have_count(0)
    wait_until(funnel_is(store, shown=1, declined=1, accepted=0), message="declined counted")

    page.reload()
    assert prompt_state(page) == "snoozed"
    expect(page.locator(BANNER)).to_have_count(0)

    # Six days later: still quiet. Seven days and a minute later: asked again.
    declined_ago(page, 6 * DAY_MS)
    assert prompt_state(page) == "snoozed"
    declined_ago(page, 7 * DAY_MS + 60_000)
    assert prompt_state(page) == "shown"
    expect(page.locator(BANNER)).to_be_visible()
    wait_until(funnel_is(store, shown=2, declined=1), message="second shown counted")


def test_keyboard_choose_topic_and_accept(
    new_context, live_server: LiveServer, store: Store, vapid_key: VapidKey
) -> None:
    context = new_context()
    context.add_init_script(FAKE_SUBSCRIBE_JS)
    page = open_demo(context, live_server)
    assert prompt_state(page) == "shown"

    # The banner comes first in the tab order: the first Tab lands on the first topic.
    focused = "document.activeElement"
    page.keyboard.press("Tab")
    assert page.evaluate(f"{focused}.value") == "animals"
    # Focus is visible: the topic's pill gets an outline.
    label_outline = page.evaluate(f"getComputedStyle({focused}.closest('label')).outlineStyle")
    assert label_outline == "solid"
    page.keyboard.press("Tab")
    assert page.evaluate(f"{focused}.value") == "tv-and-film"
    page.keyboard.press("Space")
    expect(page.get_by_role("checkbox", name="TV and Film")).not_to_be_checked()
    page.keyboard.press("Tab")
    assert page.evaluate(f"{focused}.textContent") == "Not now"
    page.keyboard.press("Tab")
    assert page.evaluate(f"{focused}.textContent") == "OK"
    assert page.evaluate(f"{focused}.matches(':focus-visible')")
    assert page.evaluate(f"getComputedStyle({focused}).outlineStyle") == "solid"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator(BANNER).screenshot(path=str(SCREENSHOTS / "prompt-keyboard-focus.png"))

    # The reader's "Allow" in the browser's own dialog.
    context.grant_permissions(["notifications"], origin=live_server.url)
    page.keyboard.press("Enter")
    page.wait_for_function("window.storypush.state === 'subscribed'")
    expect(page.locator(BANNER)).to_have_count(0)

    calls = page.evaluate("self.__fakePush.calls")
    assert calls == [{"userVisibleOnly": True, "applicationServerKey": vapid_key.public_key_b64}]
    endpoint = page.evaluate("self.__fakePush.current.endpoint")
    found = store.subscriptions.get_by_endpoint(endpoint)
    assert found is not None
    _, subscription = found
    assert subscription.topics == ("animals",)
    assert subscription.locale == "en-GB"
    assert subscription.timezone == "Europe/London"
    wait_until(funnel_is(store, shown=1, accepted=1, declined=0, denied=0), message="accepted counted")
    # The worker was registered at the root with the API base in its URL.
    script_url = page.evaluate("navigator.serviceWorker.getRegistration().then(r => r.active.scriptURL)")
    assert script_url == f"{live_server.url}/sw.js?api={live_server.url.replace(':', '%3A').replace('/', '%2F')}"


def test_click_choose_topic_and_accept(new_context, live_server: LiveServer, store: Store) -> None:
    context = new_context()
    context.add_init_script(FAKE_SUBSCRIBE_JS)
    page = open_demo(context, live_server)
    assert prompt_state(page) == "shown"
    page.get_by_role("checkbox", name="Animals").uncheck()
    context.grant_permissions(["notifications"], origin=live_server.url)
    page.get_by_role("button", name="OK").click()
    page.wait_for_function("window.storypush.state === 'subscribed'")
    endpoint = page.evaluate("self.__fakePush.current.endpoint")
    found = store.subscriptions.get_by_endpoint(endpoint)
    assert found is not None
    assert found[1].topics == ("tv-and-film",)
    assert page.evaluate("JSON.parse(localStorage.getItem('storypush:topics'))") == ["tv-and-film"]
    wait_until(funnel_is(store, shown=1, accepted=1), message="accepted counted")


def test_escape_means_not_now(new_context, live_server: LiveServer, store: Store) -> None:
    page = open_demo(new_context(), live_server)
    assert prompt_state(page) == "shown"
    page.keyboard.press("Tab")
    page.keyboard.press("Escape")
    expect(page.locator(BANNER)).to_have_count(0)
    assert page.evaluate("window.storypush.state") == "declined"
    wait_until(funnel_is(store, shown=1, declined=1), message="declined counted")


def test_ok_then_browser_blocks(new_context, live_server: LiveServer, store: Store) -> None:
    """Headless Chromium answers requestPermission() with "denied", like a reader's Block."""
    context = new_context()
    context.add_init_script(FAKE_SUBSCRIBE_JS)
    page = open_demo(context, live_server)
    assert prompt_state(page) == "shown"
    page.get_by_role("button", name="OK").click()
    page.wait_for_function("window.storypush.state === 'blocked'")
    expect(page.locator(BANNER)).to_have_count(0)
    assert page.evaluate("self.__fakePush.calls") == []
    wait_until(funnel_is(store, shown=1, accepted=0, denied=1), message="denied counted")
    page.reload()
    assert prompt_state(page) == "denied"
    expect(page.locator(BANNER)).to_have_count(0)


def test_ok_needs_a_topic(new_context, live_server: LiveServer, store: Store) -> None:
    page = open_demo(new_context(), live_server)
    assert prompt_state(page) == "shown"
    for name in ("Animals", "TV and Film"):
        page.get_by_role("checkbox", name=name).uncheck()
    page.get_by_role("button", name="OK").click()
    expect(page.get_by_role("status")).to_have_text("Choose at least one topic.")
    assert page.evaluate("document.activeElement.value") == "animals"
    assert page.evaluate("Notification.permission") == "default"
    assert store.prompt_funnel()["accepted"] == 0 and store.prompt_funnel()["denied"] == 0


def test_data_attributes_configure_the_banner(new_context, live_server: LiveServer, store: Store) -> None:
    """Another publisher's embed: own wording, every topic offered, a one-day snooze."""
    context = new_context()

    def embed_differently(route: Route) -> None:
        html = route.fetch().text()
        html = html.replace(
            'data-topics="animals,tv-and-film"',
            'data-title="Alerts" data-text="Want alerts?" '
            'data-topics-label="Topics" data-ok="Yes please" data-not-now="Later" data-snooze-days="1"',
        )
        route.fulfill(body=html, content_type="text/html; charset=utf-8")

    context.route(live_server.url + "/demo", embed_differently)
    page = open_demo(context, live_server)
    assert prompt_state(page) == "shown"
    expect(page.get_by_role("dialog", name="Alerts")).to_contain_text("Want alerts?")
    expect(page.get_by_role("group", name="Topics")).to_be_visible()
    names = [topic.name for topic in store.topics]
    expect(page.get_by_role("checkbox")).to_have_count(len(names))
    for name in names:
        expect(page.get_by_role("checkbox", name=name)).not_to_be_checked()
    page.get_by_role("button", name="Later").click()
    expect(page.locator(BANNER)).to_have_count(0)
    declined_ago(page, DAY_MS - 60_000)
    assert prompt_state(page) == "snoozed"
    declined_ago(page, DAY_MS + 60_000)
    assert prompt_state(page) == "shown"
    expect(page.get_by_role("button", name="Yes please")).to_be_visible()


@pytest.mark.parametrize(("name", "width", "height"), [("wide", 1280, 800), ("narrow", 360, 740)])
def test_banner_screenshot(name: str, width: int, height: int, new_context, live_server: LiveServer) -> None:
    page = open_demo(new_context(viewport={"width": width, "height": height}), live_server)
    assert prompt_state(page) == "shown"
    page.wait_for_timeout(300)  # let the slide-in animation finish
    box = page.locator(BANNER).bounding_box()
    assert box is not None
    # Fully on screen, no horizontal scrolling, buttons big enough to tap.
    assert box["x"] >= 0 and box["x"] + box["width"] <= width
    assert box["y"] + box["height"] <= height
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    for button in ("OK", "Not now"):
        button_box = page.get_by_role("button", name=button).bounding_box()
        assert button_box is not None and button_box["height"] >= 44
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"prompt-{name}.png"))

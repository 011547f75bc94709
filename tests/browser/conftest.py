"""Real-browser fixtures: headless Debian Chromium driven by Playwright against the real app.

The app runs in a thread (werkzeug) on 127.0.0.1, a secure context, so service workers
and push work without TLS. Nothing is skipped: if Chromium cannot start, tests fail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from playwright.sync_api import Browser, BrowserContext, Playwright, sync_playwright

from tests.helpers.browser import CHROMIUM, CHROMIUM_ARGS, LiveServer, serving


@pytest.fixture
def live_server(app: Flask) -> Iterator[LiveServer]:
    """Serve `app` (real Redis, real routes) on a random 127.0.0.1 port for one test."""
    with serving(app) as server:
        yield server


# Package scope: one browser for all browser tests, gone (with Playwright's event loop)
# before the asyncio-based tests of other packages run.
@pytest.fixture(scope="package")
def playwright_driver() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def chromium(playwright_driver: Playwright) -> Iterator[Browser]:
    """Debian's Chromium; launching it must work (no skip)."""
    browser = playwright_driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def new_context(chromium: Browser) -> Iterator[Callable[..., BrowserContext]]:
    """Factory for fresh (profile-less) contexts, closed after the test."""
    contexts: list[BrowserContext] = []

    def make(**options: object) -> BrowserContext:
        defaults = {"locale": "en-GB", "timezone_id": "Europe/London", "viewport": {"width": 1280, "height": 800}}
        options = defaults | options
        context = chromium.new_context(**options)  # type: ignore[arg-type]
        context.set_default_timeout(15_000)  # generous: CI machines are often busy
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()

"""Quiet hours and the daily cap applied by real RQ jobs to real subscribers (in-process
workers, real Redis, the HTTPS simulator): who gets the push, who is skipped and why."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask

from service import create_app
from service.settings import Settings
from service.store import keys
from service.targeting import QuietHours, Targeting
from tests.helpers.cms import STORY, publish
from tests.helpers.fanout import drain
from workers.runtime import Runtime, set_runtime

AHEAD = "Etc/GMT-12"  # UTC+12 all year (the sign in Etc/ names is inverted)


@pytest.fixture
def targeted(fanout_settings: Settings, vapid_key, redis_client) -> Iterator[Callable[..., Flask]]:
    """The app and an in-process worker runtime with the given rules."""

    def make(**rules) -> Flask:
        settings = fanout_settings.with_overrides(targeting=Targeting(**rules))
        set_runtime(Runtime(settings))
        return create_app(settings)

    yield make
    set_runtime(None)


def subscribe(app: Flask, subscriptions: list[dict], timezone: str | None) -> None:
    client = app.test_client()
    for subscription in subscriptions:
        body = {"subscription": subscription, "topics": ["animals"]} | ({"timezone": timezone} if timezone else {})
        assert client.post("/api/v1/subscriptions", json=body).status_code == 201


def tokens(subscriptions: list[dict]) -> set[str]:
    return {s["endpoint"].rsplit("/", 1)[1] for s in subscriptions}


def test_subscribers_in_their_quiet_hours_are_skipped(targeted, sim, vapid_key, webhook_secret, redis_client):
    # A three-hour window around the current hour where AHEAD is: 12 hours away from UTC.
    hour = datetime.now(Targeting().local_time(AHEAD, time.time()).tzinfo).hour
    window = QuietHours(((hour - 1) % 24) * 60, ((hour + 2) % 24) * 60)
    app = targeted(quiet_hours=window)
    asleep, awake, unknown = (sim.mint(n, vapid_key.public_bytes) for n in (4, 3, 2))
    subscribe(app, asleep, AHEAD)
    subscribe(app, awake, "UTC")
    subscribe(app, unknown, None)  # no zone reported: UTC
    campaign = publish(app, webhook_secret)
    drain(redis_client, "storypush")
    assert {m.token for m in sim.messages()} == tokens(awake + unknown)
    assert len(sim.messages()) == 5
    state = app.extensions["storypush"].store.campaigns.get(campaign)
    assert (state["state"], state["targeted"], state["sent"], state["skipped"], state["failed"]) == ("done", 9, 5, 4, 0)
    assert state["errors"] == {"quiet_hours": 4}
    pushes = app.extensions["storypush"].store.metrics.pushes()
    assert (pushes[("skipped", "none")], pushes[("sent", sim.origin.removeprefix("https://"))]) == (4, 5)


def test_the_daily_cap_skips_pushes_beyond_it_and_a_retry_is_not_counted_twice(
    targeted, sim, vapid_key, webhook_secret, redis_client
):
    app = targeted(frequency_cap=2)
    store = app.extensions["storypush"].store
    readers = sim.mint(3, vapid_key.public_bytes)
    subscribe(app, readers, "Europe/London")
    # The first push to one reader is throttled and retried: still one push for the cap.
    sim.fail(readers[0]["endpoint"], [503], retry_after="1")
    stories = [STORY | {"id": f"story-{n}", "title": f"Story {n}"} for n in range(3)]
    campaigns = []
    for story in stories:
        campaigns.append(publish(app, webhook_secret, story))
        drain(redis_client, "storypush", timeout=60)
    for reader in readers:
        titles = [m.json()["title"] for m in sim.messages(reader["endpoint"])]
        assert titles == ["Story 0", "Story 1"], titles
    assert [r["status"] for r in sim.rejections()] == [503]
    outcomes = [store.campaigns.get(c) for c in campaigns]
    assert [(c["sent"], c["skipped"], c["state"]) for c in outcomes] == [(3, 0, "done"), (3, 0, "done"), (0, 3, "done")]
    assert outcomes[2]["errors"] == {"frequency_cap": 3}


def test_no_rules_send_to_everyone(targeted, sim, vapid_key, webhook_secret, redis_client):
    app = targeted()
    readers = sim.mint(3, vapid_key.public_bytes)
    subscribe(app, readers, AHEAD)
    campaign = publish(app, webhook_secret)
    drain(redis_client, "storypush")
    state = app.extensions["storypush"].store.campaigns.get(campaign)
    assert (state["sent"], state["skipped"]) == (3, 0)
    today = datetime.now(UTC).date()  # the readers' own day is today or tomorrow (UTC+12)
    assert not any(redis_client.exists(keys.frequency_cap(today + timedelta(days=d))) for d in (0, 1))

"""The operator dashboard in headless Chromium against the real app, Redis and RQ.

Campaigns are created through the store and their counters moved as workers
would, so the test watches the dashboard follow along without a push service.
"""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect
from rq import Queue

from service.settings import Settings
from service.store import Store
from service.store.campaign_store import CampaignState
from service.store.metrics_store import PushTally
from tests.helpers import subscribe_body
from tests.helpers.admin import make_campaign, make_failed_job
from tests.helpers.browser import SCREENSHOTS, LiveServer, sign_in, wait_until

pytestmark = pytest.mark.browser


def populate(store: Store, client) -> None:
    """Subscribers, a prompt funnel and an hour of send rate, so every panel has something."""
    for topics in (["animals"], ["animals", "tv-and-film"], ["sport"], ["animals", "news"]):
        assert client.post("/api/v1/subscriptions", json=subscribe_body(topics=topics)).status_code == 201
    for kind, n in (("shown", 40), ("accepted", 18), ("declined", 15), ("denied", 3)):
        for _ in range(n):
            store.count_prompt_event(kind)
    now = time.time()
    for minutes_ago in range(0, 60, 3):
        tally = PushTally()
        for _ in range(600 + 150 * (minutes_ago % 7)):
            tally.add("fcm", "sent", 0.03)
        store.metrics.record_pushes(tally, now=now - 60 * minutes_ago)


def test_sign_in_rejects_a_wrong_token(new_context, live_server: LiveServer) -> None:
    page = sign_in(new_context(), live_server, token="not-the-admin-token-123")
    expect(page.locator(".error")).to_have_text("wrong token")
    assert page.context.cookies() == []


def test_dashboard_follows_a_campaign_cancels_one_and_retries_a_failed_job(
    new_context, live_server: LiveServer, store: Store, client, redis_client, settings: Settings
) -> None:
    populate(store, client)
    running = make_campaign(store, "walrus-our-planet", CampaignState.SENDING, title="The Walrus Scene From Our Planet")
    store.campaigns.set_targeted(running, 200)
    store.campaigns.add_counts(running, {"sent": 40, "expired": 2, "delivered": 30, "clicked": 4}, {"http_410": 2})
    time.sleep(0.01)
    to_cancel = make_campaign(store, "otter-family", CampaignState.SENDING, title="Otter Family Moves Into Town")
    store.campaigns.set_targeted(to_cancel, 120)
    store.campaigns.add_counts(to_cancel, {"sent": 30}, {})
    job_id = make_failed_job(redis_client, settings.queue_name, "ConnectionError: push service unreachable")

    context = new_context()
    page = sign_in(context, live_server)
    expect(page).to_have_url(live_server.url + "/admin")
    (cookie,) = context.cookies()
    assert (cookie["name"], cookie["secure"], cookie["httpOnly"], cookie["sameSite"]) == (
        "sp_admin",
        True,
        True,
        "Strict",
    )

    row = page.locator(f'tr[data-campaign="{running}"]')
    bar = row.locator("[role=progressbar]")
    expect(bar).to_have_attribute("aria-valuenow", "21")  # (40 + 2) / 200
    expect(row).to_contain_text("The Walrus Scene From Our Planet")
    expect(page.locator("#stat-subscribers")).to_have_text("4")
    expect(page.locator('#funnel .row[data-key="subscribed"] .n')).to_have_text("4")
    expect(page.locator('#topics .row[data-key="animals"] .n')).to_have_text("3")
    expect(page.locator("#rate-chart svg rect.bar")).to_have_count(60)
    job_row = page.locator(f'tr[data-job="{job_id}"]')
    expect(job_row).to_contain_text("RuntimeError: ConnectionError: push service unreachable")
    page.screenshot(path=str(SCREENSHOTS / "dashboard-sending.png"), full_page=True)

    # workers finish the campaign: the bar follows within a poll or two
    store.campaigns.add_counts(running, {"sent": 150, "failed": 8}, {"http_403": 8})
    store.campaigns.transition(running, CampaignState.DONE, (CampaignState.SENDING,), stamp="finished_at")
    expect(bar).to_have_attribute("aria-valuenow", "100", timeout=6000)
    expect(bar).to_have_attribute("data-state", "done")
    expect(row.locator(".badge")).to_have_text("done")

    # retry the failed job from its button: back on the queue, gone from the list
    job_row.get_by_role("button", name="Retry").click()
    expect(job_row).to_have_count(0)
    assert job_id in Queue(settings.queue_name, connection=redis_client).job_ids
    page.screenshot(path=str(SCREENSHOTS / "dashboard-done.png"), full_page=True)

    # cancel the other campaign on its own page
    page.locator(f'tr[data-campaign="{to_cancel}"] a').click()
    expect(page).to_have_url(f"{live_server.url}/admin/campaigns/{to_cancel}")
    expect(page.locator('[data-counter="sent"] dd')).to_have_text("30")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel campaign").click()
    expect(page.locator("#state")).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Cancel campaign")).to_be_disabled()
    assert store.campaigns.state(to_cancel) is CampaignState.CANCELLED
    expect(page.locator("#timeline")).to_contain_text("cancelled")
    page.screenshot(path=str(SCREENSHOTS / "dashboard-campaign-cancelled.png"), full_page=True)

    # the finished campaign's page shows its errors by reason
    page.goto(f"{live_server.url}/admin/campaigns/{running}")
    expect(page.locator("#errors")).to_contain_text("http_403")
    page.screenshot(path=str(SCREENSHOTS / "dashboard-campaign-done.png"), full_page=True)


def test_dashboard_on_a_phone(new_context, live_server: LiveServer, store: Store, client) -> None:
    populate(store, client)
    campaign_id = make_campaign(store, "phone-story", CampaignState.SENDING, title="A Story Read On A Phone")
    store.campaigns.set_targeted(campaign_id, 10)
    store.campaigns.add_counts(campaign_id, {"sent": 5}, {})
    page = sign_in(new_context(viewport={"width": 390, "height": 844}), live_server)
    expect(page.locator(f'tr[data-campaign="{campaign_id}"] [role=progressbar]')).to_have_attribute(
        "aria-valuenow", "50"
    )
    wait_until(lambda: page.locator("#updated").inner_text().startswith("Updated"), message="a poll")
    page.screenshot(path=str(SCREENSHOTS / "dashboard-phone.png"), full_page=True)

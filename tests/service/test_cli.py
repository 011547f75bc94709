"""The `storypush` command: VAPID key management, production refusals, publishing by hand,
operating campaigns, and `dev` end to end.

Refusals run as real subprocesses because "exactly one line on stderr" is about
what an operator sees, including anything logging or warnings would add.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from rq import Queue
from rq.registry import ScheduledJobRegistry

from service import create_app
from service.cli import main
from service.queueing import campaign_job_id
from service.settings import Settings
from service.store.campaign_store import CampaignState
from service.vapid import KEY_FILE
from service.vocabulary import DEFAULT_TTL
from tests.helpers import TEST_SUBJECT, kill_embedded_redis, subscribe_body
from tests.helpers.admin import make_campaign
from tests.helpers.cms import STORY
from tests.helpers.feed_documents import Item, ghost_rss
from tests.helpers.processes import STORYPUSH, clean_env, running_dev

REPO = Path(__file__).resolve().parents[2]


def _env(data_dir: Path, **overrides: str) -> dict[str, str]:
    """A clean environment for a `storypush` subprocess using `data_dir`."""
    return clean_env(STORYPUSH_DATA_DIR=str(data_dir), **overrides)


def _isolated(data_dir: Path) -> dict[str, str | None]:
    """CliRunner env: `data_dir`, and none of the shell's storypush configuration."""
    return {name: None for name in os.environ if name == "REDIS_URL" or name.startswith("STORYPUSH_")} | {
        "STORYPUSH_DATA_DIR": str(data_dir)
    }


# --- vapid init / show -------------------------------------------------------------


def test_vapid_init_creates_a_0600_key_once(tmp_path: Path):
    runner = CliRunner()
    env = _isolated(tmp_path)
    key_file = tmp_path / KEY_FILE

    first = runner.invoke(main, ["vapid", "init"], env=env)
    assert first.exit_code == 0, first.output
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    original = key_file.read_bytes()
    assert original.startswith(b"-----BEGIN PRIVATE KEY-----")

    again = runner.invoke(main, ["vapid", "init"], env=env)
    assert again.exit_code != 0
    assert "--force" in again.output
    assert key_file.read_bytes() == original  # never silently replaced

    forced = runner.invoke(main, ["vapid", "init", "--force"], env=env)
    assert forced.exit_code == 0, forced.output
    assert key_file.read_bytes() != original
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_vapid_show_prints_the_key_the_api_serves(redis_client, settings: Settings):
    runner = CliRunner()
    env = _isolated(settings.data_dir)
    assert runner.invoke(main, ["vapid", "show"], env=env).exit_code != 0  # no key yet
    assert runner.invoke(main, ["vapid", "init"], env=env).exit_code == 0

    shown = runner.invoke(main, ["vapid", "show"], env=env)
    assert shown.exit_code == 0, shown.output
    public_key = shown.output.strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{87}", public_key)
    raw = base64.urlsafe_b64decode(public_key + "=")
    assert len(raw) == 65 and raw[0] == 4

    served = create_app(settings).test_client().get("/api/v1/vapid-public-key").get_json()
    assert served == {"publicKey": public_key}


# --- web / worker refuse a configuration push services would reject ------------------


def _refusal(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `storypush <command>` expecting it to refuse; never leave a server behind."""
    proc = subprocess.Popen(
        [*STORYPUSH, command],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"storypush {command} started instead of refusing")
    finally:
        # If it got as far as starting the embedded Redis (a bug), do not leave that behind.
        kill_embedded_redis(Path(env["STORYPUSH_DATA_DIR"]))
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.fixture
def keyed_data_dir(tmp_path: Path) -> Path:
    """A data dir with a valid VAPID key, so only the variable under test is wrong."""
    result = CliRunner().invoke(main, ["vapid", "init"], env=_isolated(tmp_path))
    assert result.exit_code == 0, result.output
    return tmp_path


@pytest.mark.parametrize("command", ["web", "worker"])
@pytest.mark.parametrize(
    "subject",
    [None, "mailto:x@localhost", "mailto:ops@publisher", "https://intranet/", "ops@publisher.example.org"],
)
def test_web_and_worker_refuse_a_bad_vapid_subject(keyed_data_dir: Path, command: str, subject: str | None):
    env = _env(keyed_data_dir)
    if subject is not None:
        env["STORYPUSH_VAPID_SUBJECT"] = subject
    result = _refusal(command, env)
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "STORYPUSH_VAPID_SUBJECT" in lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize("command", ["web", "worker"])
@pytest.mark.parametrize(
    "private_key",
    [
        "-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n",
        "-----BEGIN garbage",
        "/nonexistent/vapid.pem",
        "garbage",
    ],
)
def test_web_and_worker_refuse_a_garbage_private_key(tmp_path: Path, command: str, private_key: str):
    env = _env(tmp_path, STORYPUSH_VAPID_SUBJECT=TEST_SUBJECT, STORYPUSH_VAPID_PRIVATE_KEY=private_key)
    result = _refusal(command, env)
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "STORYPUSH_VAPID_PRIVATE_KEY" in lines[0]


def test_a_private_key_file_of_garbage_is_refused(tmp_path: Path):
    garbage = tmp_path / "key.pem"
    garbage.write_text("this is not a key\n")
    env = _env(tmp_path / "data", STORYPUSH_VAPID_SUBJECT=TEST_SUBJECT, STORYPUSH_VAPID_PRIVATE_KEY=str(garbage))
    result = _refusal("web", env)
    assert result.returncode != 0
    assert len(result.stderr.splitlines()) == 1 and "STORYPUSH_VAPID_PRIVATE_KEY" in result.stderr


# --- publish, campaigns, subscribers (the store directly) ----------------------------------


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A runner whose commands use the tests' Redis and data dir."""
    for name in [n for n in os.environ if n.startswith("STORYPUSH_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("STORYPUSH_DATA_DIR", str(settings.data_dir))
    return CliRunner()


def _publish_args(story_id: str, *extra: str) -> list[str]:
    return ["publish", "--id", story_id, "--title", STORY["title"], "--url", STORY["url"], *extra]


def test_publish_creates_one_queued_campaign_like_the_webhook(cli_env, store, settings, redis_client):
    args = _publish_args("walrus-our-planet", "--topic", "animals", "--topic", "tv-and-film", "--body", STORY["body"])
    first = cli_env.invoke(main, [*args, "--urgency", "high", "--ttl", "600"])
    assert first.exit_code == 0, first.output
    campaign_id = re.fullmatch(r"campaign (c[0-9a-f]{12}) created: queued\n", first.output).group(1)
    campaign = store.campaigns.get(campaign_id)
    assert campaign["state"] == "queued" and campaign["send_at"] is None
    assert campaign["story"] == {
        "id": "walrus-our-planet",
        "title": STORY["title"],
        "body": STORY["body"],
        "url": STORY["url"],
        "topics": ["animals", "tv-and-film"],
        "ttl": 600,
        "urgency": "high",
    }
    queue = Queue(settings.queue_name, connection=redis_client)
    assert queue.job_ids == [campaign_job_id(campaign_id)]

    again = cli_env.invoke(main, args)  # the same story id: the same campaign, nothing queued twice
    assert again.exit_code == 0 and again.output == f"campaign {campaign_id} already exists: queued\n"
    assert queue.job_ids == [campaign_job_id(campaign_id)]


def test_publish_defaults_and_a_later_send_at(cli_env, store, settings, redis_client):
    send_at = time.time() + 3600
    result = cli_env.invoke(main, [*_publish_args("later", "--topic", "sport"), "--send-at", str(send_at)])
    assert result.exit_code == 0, result.output
    campaign_id = re.fullmatch(r"campaign (c[0-9a-f]{12}) created: scheduled\n", result.output).group(1)
    campaign = store.campaigns.get(campaign_id)
    assert campaign["state"] == "scheduled" and campaign["send_at"] == pytest.approx(send_at)
    assert (campaign["story"]["ttl"], campaign["story"]["urgency"], campaign["story"]["body"]) == (
        DEFAULT_TTL,
        "normal",
        "",
    )
    scheduled = ScheduledJobRegistry(settings.queue_name, connection=redis_client)
    assert scheduled.get_job_ids() == [campaign_job_id(campaign_id)]
    assert Queue(settings.queue_name, connection=redis_client).job_ids == []


@pytest.mark.parametrize(
    ("extra", "exit_code", "says"),
    [
        (["--topic", "knitting"], 1, "unknown topic 'knitting'"),
        (["--topic", "animals", "--ttl", "10"], 1, "ttl"),
        (
            ["--topic", "animals", "--urgency", "urgent"],
            2,
            "'urgent' is not one of 'very-low', 'low', 'normal', 'high'",
        ),
        ([], 2, "Missing option '--topic'"),
    ],
)
def test_publish_refuses_what_the_webhook_refuses(cli_env, store, extra, exit_code, says):
    result = cli_env.invoke(main, _publish_args("refused", *extra))
    assert result.exit_code == exit_code, result.output
    assert says in result.output
    assert store.campaigns.list() == []


def test_publish_refuses_a_url_that_is_not_http(cli_env, store):
    result = cli_env.invoke(
        main, ["publish", "--id", "x", "--title", "T", "--url", "javascript:alert(1)", "--topic", "news"]
    )
    assert result.exit_code == 1 and "url" in result.output
    assert store.campaigns.list() == []


def test_campaigns_show_and_cancel(cli_env, store):
    queued = make_campaign(store, "cli-queued", title="Walrus scene")
    sending = make_campaign(store, "cli-sending", CampaignState.SENDING)
    store.campaigns.set_targeted(sending, 4)
    store.campaigns.add_counts(sending, {"sent": 3}, {"http_410": 1})
    listing = cli_env.invoke(main, ["campaigns", "--limit", "5"])
    assert listing.exit_code == 0, listing.output
    lines = listing.output.splitlines()
    assert lines[0].startswith("ID") and sending in lines[1] and queued in lines[2]
    assert "3/4" in lines[1] and "Walrus scene" in lines[2]
    shown = cli_env.invoke(main, ["campaign", "show", sending])
    assert shown.exit_code == 0 and "sending" in shown.output and "http_410: 1" in shown.output
    cancelled = cli_env.invoke(main, ["campaign", "cancel", queued])
    assert cancelled.exit_code == 0 and store.campaigns.state(queued) is CampaignState.CANCELLED
    again = cli_env.invoke(main, ["campaign", "cancel", queued])
    assert again.exit_code == 1 and "already cancelled" in again.output
    assert cli_env.invoke(main, ["campaign", "show", "nope"]).exit_code == 1
    assert cli_env.invoke(main, ["campaigns", "--limit", "0"]).exit_code == 2


def test_follow_watches_a_sending_campaign_until_it_is_done(cli_env, store):
    campaign_id = make_campaign(store, "cli-follow", CampaignState.SENDING)
    store.campaigns.set_targeted(campaign_id, 4)

    def send_meanwhile() -> None:
        """What workers would do while the command watches: progress, then done."""
        time.sleep(0.3)
        store.campaigns.add_counts(campaign_id, {"sent": 2}, {})
        time.sleep(0.3)
        store.campaigns.add_counts(campaign_id, {"sent": 1, "expired": 1}, {"http_410": 1})
        store.campaigns.transition(campaign_id, CampaignState.DONE, (CampaignState.SENDING,), stamp="finished_at")

    workers = threading.Thread(target=send_meanwhile)
    started = time.monotonic()
    workers.start()
    try:
        result = cli_env.invoke(main, ["campaign", "show", campaign_id, "--follow", "--interval", "0.05"])
        watched = time.monotonic() - started
    finally:
        workers.join()
    assert result.exit_code == 0, result.output
    assert watched >= 0.6  # it waited for the campaign to end
    assert f"campaign {campaign_id}: done" in result.output
    assert re.search(r"sent\s+3\n", result.output) and re.search(r"expired\s+1\n", result.output)
    assert "error     http_410: 1" in result.output


def test_subscribers_stats(cli_env, client, store):
    client.post("/api/v1/subscriptions", json=subscribe_body(topics=["animals", "sport"]))
    store.count_prompt_event("shown")
    result = cli_env.invoke(main, ["subscribers", "stats"])
    assert result.exit_code == 0
    assert "subscribers  1" in result.output and re.search(r"animals\s+1", result.output)
    assert "shown 1" in result.output


def test_help_explains_the_operator_commands(cli_env):
    for args in (["campaigns", "--help"], ["campaign", "show", "--help"], ["subscribers", "stats", "--help"]):
        result = cli_env.invoke(main, args)
        assert result.exit_code == 0 and len(result.output.splitlines()) > 3


# --- storypush dev, end to end ----------------------------------------------------------


@pytest.fixture
def dev_data_dir(tmp_path: Path) -> Iterator[Path]:
    data_dir = tmp_path / "var"
    yield data_dir
    kill_embedded_redis(data_dir)


@pytest.mark.slow
def _dev_polls_a_feed(dev, token: str, feed_server) -> None:
    """`dev` alone (no other process) polls a feed added through the operator API."""
    story = Item(key="dev-1", title="Dev story", link="https://publisher.example/dev-1", categories=["News"])
    feed_server.serve("/rss/", ghost_rss([story]))
    headers = {"Authorization": f"Bearer {token}"}
    feeds_api = f"{dev.base}/admin/api/feeds"
    added = requests.post(feeds_api, json={"url": feed_server.url("/rss/")}, headers=headers, timeout=5)
    assert added.status_code == 201, added.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        (feed,) = requests.get(feeds_api, headers=headers, timeout=5).json()["feeds"]
        if feed["last_success_at"]:
            assert feed["entries_seen"] == 1 and feed["failures"] == 0
            return
        time.sleep(0.2)
    raise AssertionError(f"storypush dev never polled the feed: {feed}")


def test_dev_runs_everything_and_ctrl_c_stops_it_all(dev_data_dir: Path, feed_server):
    body = subscribe_body(topics=["animals", "sport"], locale="en-GB", timezone="Europe/London")
    env = _env(dev_data_dir, STORYPUSH_RATE_LIMIT="100000", STORYPUSH_FEED_HOSTS=feed_server.authority)

    with running_dev(STORYPUSH, dev_data_dir, env, REPO) as dev:
        dev.wait_for_line(rf"API\s+http://127\.0\.0\.1:{dev.port}/api/v1/topics")
        dev.wait_for_line(rf"dashboard\s+http://127\.0\.0\.1:{dev.port}/admin")
        token = dev.wait_for_line(r"admin token").split()[-1]
        assert len(token) >= 16
        dev.wait_for_line(r"Ctrl-C stops everything")
        assert dev.wait_healthy() == {"redis": "ok", "workers": 1}

        created = requests.post(f"{dev.base}/api/v1/subscriptions", json=body, timeout=5)
        assert created.status_code == 201, created.text
        id_ = created.json()["id"]
        key = requests.get(f"{dev.base}/api/v1/vapid-public-key", timeout=5).json()["publicKey"]
        assert (dev_data_dir / KEY_FILE).exists()
        _dev_polls_a_feed(dev, token, feed_server)

        dev.stop_and_check_all_gone()

    # Again on the same data dir: the same Redis data and the same VAPID key.
    with running_dev(STORYPUSH, dev_data_dir, env, REPO) as dev:
        dev.wait_for_line(r"Ctrl-C stops everything")
        dev.wait_healthy()
        assert requests.get(f"{dev.base}/api/v1/vapid-public-key", timeout=5).json()["publicKey"] == key
        again = requests.post(f"{dev.base}/api/v1/subscriptions", json=body, timeout=5)
        assert again.status_code == 200, again.text  # updated, not created: it was still there
        assert again.json()["id"] == id_
        dev.stop_and_check_all_gone()

"""The `storypush` command: VAPID key management, production refusals, and `dev` end to end.

Refusals run as real subprocesses because "exactly one line on stderr" is about
what an operator sees, including anything logging or warnings would add.
"""

from __future__ import annotations

import base64
import contextlib
import os
import queue
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests
from click.testing import CliRunner

from service import create_app
from service.cli import main
from service.settings import Settings
from service.vapid import KEY_FILE
from tests.feed_documents import Item, ghost_rss
from tests.helpers import TEST_SUBJECT, kill_embedded_redis, subscribe_body

REPO = Path(__file__).resolve().parents[2]
# Variables a developer's shell might carry that would change what these commands do.
_CONFIG_VARS = (
    "REDIS_URL",
    "STORYPUSH_STORE_URL",
    "STORYPUSH_VAPID_PRIVATE_KEY",
    "STORYPUSH_VAPID_SUBJECT",
    "STORYPUSH_ADMIN_TOKEN",
    "STORYPUSH_WEBHOOK_SECRET",
)


def _env(data_dir: Path, **overrides: str) -> dict[str, str]:
    """A clean environment for a `storypush` subprocess using `data_dir`."""
    env = {k: v for k, v in os.environ.items() if k not in _CONFIG_VARS}
    env.update(STORYPUSH_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1", **overrides)
    return env


def _isolated(data_dir: Path) -> dict[str, str | None]:
    """CliRunner env: `data_dir`, and none of the shell's storypush configuration."""
    return {name: None for name in _CONFIG_VARS} | {"STORYPUSH_DATA_DIR": str(data_dir)}


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
        [sys.executable, "-m", "service.cli", command],
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


# --- storypush dev, end to end ----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DevProcess:
    """A running `storypush dev`, its output collected by a thread (a pipe must be drained)."""

    def __init__(self, data_dir: Path, port: int, **env: str):
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "dev", "--port", str(port)],
            cwd=REPO,
            env=_env(data_dir, STORYPUSH_RATE_LIMIT="100000", **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for_line(self, pattern: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.output.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r}; output so far:\n{''.join(self.output)}")

    def wait_healthy(self, timeout: float = 30) -> dict:
        """Wait until /healthz says Redis is fine and at least one worker has registered."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                response = requests.get(self.base + "/healthz", timeout=2)
                last = (response.status_code, response.text)
                if response.status_code == 200 and response.json()["workers"] >= 1:
                    return response.json()
            except requests.ConnectionError as exc:
                last = exc
            time.sleep(0.2)
        raise AssertionError(f"/healthz not ready in {timeout} s: {last}")

    def tree(self, data_dir: Path) -> list[psutil.Process]:
        """Every process `dev` started: its descendants, plus anything naming the data dir or port."""
        found = {p.pid: p for p in psutil.Process(self.proc.pid).children(recursive=True)}
        for proc in psutil.process_iter(["cmdline", "cwd"]):
            try:
                text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["cwd"] or "")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if proc.pid != self.proc.pid and (str(data_dir) in text or f"--port {self.port}" in text):
                found.setdefault(proc.pid, proc)
        return list(found.values())

    def kill_tree(self, data_dir: Path) -> None:
        """Test cleanup only: SIGKILL what is left of this dev process's tree."""
        for proc in [*self.tree(data_dir), psutil.Process(self.proc.pid)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        self.proc.wait(timeout=10)


def _alive(proc: psutil.Process) -> bool:
    # An orphan whose parent is gone may linger as a zombie until PID 1 reaps it: it is dead.
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _stop_and_check_all_gone(dev: DevProcess, data_dir: Path, timeout: float = 20) -> None:
    children = dev.tree(data_dir)
    names = sorted({p.name() for p in children})
    # gunicorn master + 2 workers, the RQ worker, redis-server: at least 5 processes.
    assert len(children) >= 5, names
    assert any("redis-server" in name for name in names), names
    dev.proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (dev.proc.poll() is None or any(_alive(p) for p in children)):
        time.sleep(0.1)
    left = [f"{p.pid} {' '.join(p.cmdline())}" for p in children if _alive(p)]
    assert dev.proc.poll() is not None, "storypush dev still running after SIGINT"
    assert not left, f"still running {timeout} s after SIGINT: {left}"
    assert dev.proc.returncode == 0
    dev.wait_for_line(r"^stopped", timeout=5)


@pytest.fixture
def dev_data_dir(tmp_path: Path) -> Iterator[Path]:
    data_dir = tmp_path / "var"
    yield data_dir
    kill_embedded_redis(data_dir)


def _dev_polls_a_feed(dev: DevProcess, token: str, feed_server) -> None:
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


@pytest.mark.slow
def test_dev_runs_everything_and_ctrl_c_stops_it_all(dev_data_dir: Path, feed_server):
    body = subscribe_body(topics=["animals", "sport"], locale="en-GB", timezone="Europe/London")
    port = _free_port()

    dev = DevProcess(dev_data_dir, port, STORYPUSH_FEED_HOSTS=feed_server.authority)
    try:
        dev.wait_for_line(rf"API\s+http://127\.0\.0\.1:{port}/api/v1/topics")
        dev.wait_for_line(rf"dashboard\s+http://127\.0\.0\.1:{port}/admin")
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

        _stop_and_check_all_gone(dev, dev_data_dir)
    finally:
        if dev.proc.poll() is None:
            dev.kill_tree(dev_data_dir)

    # Again on the same data dir: the same Redis data and the same VAPID key.
    dev = DevProcess(dev_data_dir, port)
    try:
        dev.wait_for_line(r"Ctrl-C stops everything")
        dev.wait_healthy()
        assert requests.get(f"{dev.base}/api/v1/vapid-public-key", timeout=5).json()["publicKey"] == key
        again = requests.post(f"{dev.base}/api/v1/subscriptions", json=body, timeout=5)
        assert again.status_code == 200, again.text  # updated, not created: it was still there
        assert again.json()["id"] == id_
        _stop_and_check_all_gone(dev, dev_data_dir)
    finally:
        if dev.proc.poll() is None:
            dev.kill_tree(dev_data_dir)

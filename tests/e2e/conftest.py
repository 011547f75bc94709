"""Real processes: `storypush web` (gunicorn) and `storypush worker` (RQ) as subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from service.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Stack:
    """The web server and worker processes of one test, all stopped at the end."""

    def __init__(self, env: dict[str, str], logs: Path):
        self.env = env
        self.logs = logs
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen] = []

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}-{len(self.processes)}.log", "wb")  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def start_web(self) -> None:
        self._spawn("web", "web", "--port", str(self.port), "--workers", "2")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(self.base + "/healthz", timeout=3).status_code in (200, 503):
                    return
            except requests.RequestException:
                time.sleep(0.1)
        raise AssertionError(f"storypush web did not start; see {self.logs}")

    def start_worker(self) -> subprocess.Popen:
        return self._spawn("worker", "worker")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def process_env(settings: Settings, push_hosts: str, ca_file: str, **extra: str) -> dict[str, str]:
    """The environment a `storypush web`/`worker` subprocess reads `settings` from,
    accepting and trusting a local push service."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORYPUSH_")}
    env.update(
        REDIS_URL=settings.redis_url or "",
        STORYPUSH_DATA_DIR=str(settings.data_dir),
        STORYPUSH_VAPID_SUBJECT=settings.vapid_subject or "",
        STORYPUSH_WEBHOOK_SECRET=settings.webhook_secret or "",
        STORYPUSH_ADMIN_TOKEN=settings.admin_token or "",
        STORYPUSH_PUSH_HOSTS=push_hosts,
        STORYPUSH_RATE_LIMIT="100000",
        SSL_CERT_FILE=ca_file,
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


@pytest.fixture
def stack_env(fanout_settings: Settings, vapid_key, sim) -> dict[str, str]:
    return process_env(
        fanout_settings,
        ",".join(fanout_settings.push_hosts),
        sim.ca_file,
        STORYPUSH_BATCH_SIZE="20",
        STORYPUSH_MAX_ATTEMPTS="4",
    )


@contextmanager
def running_stack(env: dict[str, str], tmp_path: Path) -> Iterator[Stack]:
    """A `Stack` whose processes (and their logs under tmp_path/logs) end with the block."""
    logs = tmp_path / "logs"
    logs.mkdir()
    stack = Stack(env, logs)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def stack(stack_env: dict[str, str], tmp_path: Path) -> Iterator[Stack]:
    with running_stack(stack_env, tmp_path) as stack:
        yield stack

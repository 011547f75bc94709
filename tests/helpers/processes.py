"""storypush as real processes: `storypush web`/`worker` stacks and `storypush dev`, each stopped
at the end, and the environment they read their configuration from."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psutil
import requests

from service.settings import Settings

STORYPUSH = [sys.executable, "-m", "service.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def clean_env(**overrides: str) -> dict[str, str]:
    """This process's environment without any storypush configuration a developer's shell
    might carry (REDIS_URL, STORYPUSH_*), plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("STORYPUSH_")}
    env.update(PYTHONUNBUFFERED="1", **overrides)
    return env


def process_env(settings: Settings, push_hosts: str, ca_file: str, **extra: str) -> dict[str, str]:
    """The environment a `storypush web`/`worker` subprocess reads `settings` from,
    accepting and trusting a local push service."""
    return clean_env(
        REDIS_URL=settings.redis_url or "",
        STORYPUSH_DATA_DIR=str(settings.data_dir),
        STORYPUSH_VAPID_SUBJECT=settings.vapid_subject or "",
        STORYPUSH_WEBHOOK_SECRET=settings.webhook_secret or "",
        STORYPUSH_ADMIN_TOKEN=settings.admin_token or "",
        STORYPUSH_PUSH_HOSTS=push_hosts,
        STORYPUSH_RATE_LIMIT="100000",
        SSL_CERT_FILE=ca_file,
        **extra,
    )


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
            [*STORYPUSH, *args],
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
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=15)
            # Whatever is left of its group: the worker itself, or RQ's scheduler process it
            # forked, which outlives it retrying a Redis the test has shut down.
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


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


class DevProcess:
    """A running `storypush dev`, its output collected by a thread (a pipe must be drained).

    Args:
        command: how to call storypush (`STORYPUSH`, or an installed console script).
        data_dir: where its embedded Redis and VAPID key live, to find what it started.
    """

    def __init__(self, command: list[str], data_dir: Path, port: int, env: dict[str, str], cwd: Path):
        self.port = port
        self.data_dir = data_dir
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [*command, "dev", "--port", str(port)],
            cwd=cwd,
            env=env,
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

    def tree(self) -> list[psutil.Process]:
        """Every process `dev` started: its descendants, plus anything naming the data dir or port."""
        found = {p.pid: p for p in psutil.Process(self.proc.pid).children(recursive=True)}
        for proc in psutil.process_iter(["cmdline", "cwd"]):
            try:
                text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["cwd"] or "")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if proc.pid != self.proc.pid and (str(self.data_dir) in text or f"--port {self.port}" in text):
                found.setdefault(proc.pid, proc)
        return list(found.values())

    def stop_and_check_all_gone(self, timeout: float = 20) -> None:
        """Ctrl-C, then every process it started must be gone within `timeout`."""
        children = self.tree()
        names = sorted({p.name() for p in children})
        # gunicorn master + 2 workers, the RQ worker, redis-server: at least 5 processes.
        assert len(children) >= 5, names
        assert any("redis-server" in name for name in names), names
        self.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (self.proc.poll() is None or any(_alive(p) for p in children)):
            time.sleep(0.1)
        left = [f"{p.pid} {' '.join(p.cmdline())}" for p in children if _alive(p)]
        assert self.proc.poll() is not None, "storypush dev still running after SIGINT"
        assert not left, f"still running {timeout} s after SIGINT: {left}"
        assert self.proc.returncode == 0
        self.wait_for_line(r"^stopped", timeout=5)

    def kill_tree(self) -> None:
        """Test cleanup only: SIGKILL what is left of this dev process's tree."""
        for proc in [*self.tree(), psutil.Process(self.proc.pid)]:
            with suppress(psutil.NoSuchProcess):
                proc.kill()
        self.proc.wait(timeout=10)


@contextmanager
def running_dev(command: list[str], data_dir: Path, env: dict[str, str], cwd: Path) -> Iterator[DevProcess]:
    """A `storypush dev` on a free port; SIGKILLed with everything it started if still running at the end."""
    dev = DevProcess(command, data_dir, free_port(), env, cwd)
    try:
        yield dev
    finally:
        if dev.proc.poll() is None:
            dev.kill_tree()


def _alive(proc: psutil.Process) -> bool:
    # An orphan whose parent is gone may linger as a zombie until PID 1 reaps it: it is dead.
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False

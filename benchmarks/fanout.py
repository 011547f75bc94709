"""The fan-out benchmark behind `storypush bench`: storypush against pywebpush, same subscribers,
same simulated push service, same run.

    storypush bench --bad-origin hang|throttle [--subscribers 6000]   (see benchmarks.bad_origin)
    storypush bench [--subscribers 20000] [--latency-ms 40,150] [--latency-spread 0] [--sample 200] [--in-flight 2000]
                    [--send-async-in-flight 200,1000]
                    [--verify sample:50] [--profile /tmp/storypush-profile] [--json]

For each push-service latency it runs, against one `benchmarks.pushsim` simulator pinned to CPU 0:

1. storypush for real: subscriptions in Redis, a story published through the signed CMS
   webhook, and one `storypush worker --burst` process pinned to CPU 1. Wall time is the
   campaign's own `started_at` → `finished_at`; CPU is the worker's, read from /proc while
   the campaign runs (interpreter start-up excluded; the total is reported too).
2. pywebpush `WebPusher.send_async` (shared aiohttp session, VAPID signed once) on CPU 1.
3. a plain `pywebpush.webpush()` loop on CPU 1, over `--sample` subscribers, extrapolated.

and, on CPU 1 right after each storypush run, the crypto floor: one RFC 8291 encryption
(its ratio's denominator, measured beside it, not minutes away). Every run must be answered
201 for every push and every decrypted sample must decrypt, or the benchmark fails: a fast
sender that sends garbage is not fast. Why a separate process per sender: each gets exactly
one core, and the simulator, on the other one, is never what is measured (see README).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from benchmarks.common import WALRUS_STORY, subscription_of

SUBJECT = "mailto:bench@publisher.example.org"
SIM_CPU, SENDER_CPU = 0, 1
# A db number of its own when REDIS_URL is given: it is flushed before and after.
BENCH_REDIS_DB = 15
CRYPTO_ITERATIONS = 2000
# The window the worker's CPU share is judged over to say its ramp is done: /proc counts CPU
# in 10 ms ticks, so a shorter window would be mostly rounding.
RAMP_WINDOW = 0.2
# Goals at every latency measured (the README explains where they come from): the worker
# fills its core (≥ 90 % of its CPU-bound rate), beats the better send_async by 1.5× and
# the plain loop by 100×, and spends at most 2.5× the crypto floor per push.
GOAL_CORE, GOAL_VS_SEND_ASYNC, GOAL_VS_LOOP, GOAL_CPU_VS_FLOOR = 0.9, 1.5, 100.0, 2.5
SEND_ASYNC = "pywebpush send_async"
WARM = "storypush, next campaign"  # the same worker's second campaign: see `run_warm_campaign`
STORY: dict[str, Any] = {k: v for k, v in WALRUS_STORY.items() if k != "id"}


class BenchmarkError(RuntimeError):
    """A run did not deliver what it should have: the figures would be meaningless."""


@dataclass
class Figure:
    """One sender's result at one latency."""

    sender: str
    latency_ms: float
    pushes: int  # pushes actually made (the loop's sample size for the plain loop)
    wall: float
    cpu: float
    extrapolated_to: int | None = None
    cpu_total: float | None = None  # storypush: the worker process from exec to exit
    # storypush: seconds from the campaign's start until its worker first kept GOAL_CORE of
    # a core busy (over RAMP_WINDOW), and its share of a core from then to the end
    ramp: float | None = None
    core_after_ramp: float | None = None

    @property
    def pushes_per_s(self) -> float:
        return self.pushes / self.wall if self.wall else math.inf

    @property
    def cpu_per_1k(self) -> float:
        return self.cpu / self.pushes * 1000

    @property
    def core(self) -> float:
        """Share of one core used while sending: the rate ÷ the rate its CPU alone allows."""
        return self.cpu / self.wall if self.wall else 0.0


# -- processes ---------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def proc_stat(pid: int) -> tuple[str, float]:
    """(state letter, user+system CPU seconds) of `pid`; readable until the parent reaps it."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return fields[0], (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pinned(cpu: int, argv: list[str]) -> list[str]:
    """`argv` run on one CPU; `taskset` execs it, so the pid is the program's own."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > cpu:
        return ["taskset", "-c", str(cpu), *argv]
    return argv


def python_env(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **extra}


def run_client(spec: dict[str, Any], workdir: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `benchmarks.fanout_clients` on the sender CPU with `spec`; its JSON answer."""
    path = workdir / f"client-{spec['mode']}-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(spec))
    try:
        done = subprocess.run(
            pinned(SENDER_CPU, [sys.executable, "-m", "benchmarks.fanout_clients", str(path)]),
            env=python_env(env or {}),
            capture_output=True,
            text=True,
            timeout=1800,
        )
    finally:
        path.unlink(missing_ok=True)
    if done.returncode != 0:
        raise BenchmarkError(f"{spec['mode']} client failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the push-service simulator ------------------------------------------------------------------


def check_delivered(sim: Any, expected: int, label: str) -> dict[str, Any]:
    """Fail loudly unless the simulator accepted exactly `expected` pushes, all 201, and every
    sampled (or deferred) decryption succeeded."""
    stats = sim.stats()
    problems = []
    if stats["by_status"] != {"201": expected} or stats["delivered"] != expected or stats["requests"] != expected:
        problems.append(
            f"expected {expected} × 201, got requests={stats['requests']} by_status={stats['by_status']}"
            f" delivered={stats['delivered']}"
        )
    if stats["rejected"] or stats["dropped"] or stats["decrypt_errors"]:
        problems.append(
            f"rejected={stats['rejected']} dropped={stats['dropped']} decrypt_errors={stats['decrypt_errors']}"
            f" reasons={stats['reasons']}"
        )
    if expected and not stats["decrypted"]:
        problems.append("nothing was decrypted: verification did not run")
    if problems:
        raise BenchmarkError(f"{label}: " + "; ".join(problems))
    return stats


# -- storypush -----------------------------------------------------------------------------------


def _redis_url_with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = dict(parse_qsl(parts.query))
        query["db"] = str(db)
        return urlunsplit(parts._replace(query=urlencode(query)))
    return urlunsplit(parts._replace(path=f"/{db}"))


class Deployment:
    """A throwaway storypush: data dir, Redis, VAPID key, the Flask app for the webhook."""

    def __init__(self, workdir: Path, sim: Any, batch_size: int, in_flight: int) -> None:
        import redis

        from service import create_app
        from service.embedded_redis import ensure_embedded_redis
        from service.settings import Settings
        from service.vapid import create_key, key_path

        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.embedded = None
        if os.environ.get("REDIS_URL"):
            self.redis_url = _redis_url_with_db(os.environ["REDIS_URL"], BENCH_REDIS_DB)
        else:
            self.embedded = ensure_embedded_redis(self.data_dir)
            self.redis_url = self.embedded.url
        redis.Redis.from_url(self.redis_url).flushdb()
        self.webhook_secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
        self.push_hosts = tuple(sim.authorities)
        self.ca_file = sim.ca_file
        self.batch_size, self.in_flight = batch_size, in_flight
        self.settings = Settings(
            redis_url=self.redis_url,
            data_dir=self.data_dir,
            vapid_subject=SUBJECT,
            webhook_secret=self.webhook_secret,
            push_hosts=self.push_hosts,
            batch_size=batch_size,
            max_in_flight=in_flight,
        )
        self.key, _ = create_key(self.settings)
        self.key_path = key_path(self.settings)
        self.app = create_app(self.settings)
        self.store = self.app.extensions["storypush"].store

    def close(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url)
        client.flushdb()
        client.close()
        if self.embedded is not None:
            self.embedded.stop()

    def store_subscriptions(self, subscriptions: list[dict[str, Any]], topics: tuple[str, ...] = ("animals",)) -> None:
        """Bulk setup (not timed): the same record the API's upsert writes."""
        upsert = self.store.subscriptions.upsert
        for item in subscriptions:
            upsert(subscription_of(item, topics))

    def publish(self, story_id: str, topics: tuple[str, ...] = ("animals",)) -> str:
        """POST a signed `story.published` to the real webhook; the campaign id it answers."""
        from standardwebhooks.webhooks import Webhook

        body = json.dumps({"type": "story.published", "data": {**STORY, "id": story_id, "topics": list(topics)}})
        message_id = f"msg_{uuid.uuid4().hex}"
        now = datetime.now(tz=UTC)
        headers = {
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(self.webhook_secret).sign(message_id, now, body),
            "content-type": "application/json",
        }
        response = self.app.test_client().post("/webhooks/cms", data=body, headers=headers)
        if response.status_code != 202:
            raise BenchmarkError(f"webhook answered {response.status_code}: {response.get_data(as_text=True)}")
        return response.get_json()["campaign"]

    def payload_like(self, campaign_id: str, story_id: str, subscription_id: int) -> bytes:
        """The exact message storypush sends one subscriber, for the other senders to send."""
        from service.receipts import mint, receipt_key
        from workers.message import build_template

        template = build_template(campaign_id, {**STORY, "id": story_id})
        return template.render(mint(receipt_key(self.key), campaign_id, subscription_id))

    def worker_env(self) -> dict[str, str]:
        return {
            "REDIS_URL": self.redis_url,
            "STORYPUSH_DATA_DIR": str(self.data_dir),
            "STORYPUSH_VAPID_SUBJECT": SUBJECT,
            "STORYPUSH_PUSH_HOSTS": ",".join(self.push_hosts),
            "SSL_CERT_FILE": self.ca_file,
            "STORYPUSH_BATCH_SIZE": str(self.batch_size),
            "STORYPUSH_MAX_IN_FLIGHT": str(self.in_flight),
        }

    def start_worker(self, name: str, burst: bool) -> tuple[subprocess.Popen[bytes], Path]:
        """A `storypush worker` pinned to the sender CPU, its output in the workdir."""
        log_path = self.workdir / f"worker-{name}.log"
        argv = pinned(SENDER_CPU, [sys.executable, "-m", "service.cli", "worker", *(["--burst"] if burst else [])])
        with open(log_path, "wb") as log:
            worker = subprocess.Popen(argv, env=python_env(self.worker_env()), stdout=log, stderr=log)
        return worker, log_path

    def _measure(
        self, worker: subprocess.Popen[bytes], log_path: Path, campaign_id: str, expected: int, sender: str,
        latency_ms: float,
    ) -> Figure:  # fmt: skip
        """Wait for the campaign to be done, sampling the worker's CPU from /proc from when the
        campaign leaves `queued` to when it is `done` (which leaves out interpreter and RQ
        start-up); the process is not reaped before that, so /proc stays readable."""
        from service.store.campaign_store import FINAL_STATES, CampaignState

        campaigns = self.store.campaigns
        cpu_start = None
        samples: list[tuple[float, float]] = []  # (monotonic, worker CPU) while sending
        deadline = time.monotonic() + 600
        while True:
            state = campaigns.state(campaign_id)
            status, cpu = proc_stat(worker.pid)
            if cpu_start is None and state is not None and state is not CampaignState.QUEUED:
                cpu_start = cpu
            if cpu_start is not None:
                samples.append((time.monotonic(), cpu))
            if state in FINAL_STATES:
                cpu_end = cpu
                break
            if status in ("Z", "X") or time.monotonic() > deadline:
                counts = {key: value for key, value in (campaigns.get(campaign_id) or {}).items()
                          if key in ("sent", "failed", "retrying", "errors")}  # fmt: skip
                raise BenchmarkError(
                    f"worker stopped (or timed out) with the campaign {state} ({counts}):\n"
                    + log_path.read_text(errors="replace")[-3000:]
                )
            time.sleep(0.01)
        campaign = campaigns.get(campaign_id) or {}
        if campaign.get("state") != "done" or campaign.get("sent") != expected:
            raise BenchmarkError(
                f"campaign {campaign_id}: state={campaign.get('state')} sent={campaign.get('sent')}/{expected}"
                f" failed={campaign.get('failed')} errors={campaign.get('errors')}"
            )
        wall = campaign["finished_at"] - campaign["started_at"]
        ramp, core_after = ramp_of(samples)
        return Figure(sender, latency_ms, expected, wall, cpu_end - (cpu_start or 0.0), ramp=ramp,
                      core_after_ramp=core_after)  # fmt: skip

    def run_campaign(self, campaign_id: str, expected: int, latency_ms: float, profile: Path | None = None) -> Figure:
        """A new `storypush worker --burst` sends the campaign: cold lanes, no connections."""
        worker, log_path = self.start_worker(campaign_id, burst=True)
        spy = None
        if profile is not None:
            spy = start_profiler(worker.pid, profile)
        try:
            figure = self._measure(worker, log_path, campaign_id, expected, "storypush", latency_ms)
            # The total, from exec to exit, for the README's caveat on start-up cost.
            figure.cpu_total = reap(worker, timeout=60)
        finally:
            if worker.returncode is None:
                worker.kill()
                worker.wait()
            if spy is not None:
                spy.wait(timeout=60)
        return figure

    def run_warm_campaign(self, sim: Any, expected: int, latency_ms: float) -> Figure:
        """A long-running `storypush worker` (as the Procfile runs it) sends one campaign
        unmeasured, then the measured one: its lanes have grown, as for every campaign but
        a new worker's first. Its connections have not lasted: the simulator closes them
        all in between, as push services close idle ones before a publisher's next story."""
        from benchmarks.pushsim.client import terminate

        worker, log_path = self.start_worker(f"warm-{latency_ms:g}", burst=False)
        try:
            warm_up = self.publish(f"bench-warm-up-{uuid.uuid4().hex[:8]}")
            self._measure(worker, log_path, warm_up, expected, "warm-up", latency_ms)
            check_delivered(sim, expected, f"storypush warm-up at {latency_ms:g} ms")
            sim.reset()
            for origin in range(len(sim.ports)):  # resets its connections (the worker is idle)
                sim.refuse_connections(origin)
                sim.refuse_connections(origin, on=False)
            campaign_id = self.publish(f"bench-warm-{uuid.uuid4().hex[:8]}")
            return self._measure(worker, log_path, campaign_id, expected, WARM, latency_ms)
        finally:
            terminate(worker, 30)


def ramp_of(samples: list[tuple[float, float]]) -> tuple[float | None, float | None]:
    """From (time, CPU seconds) samples of a campaign's worker: how long until it first used
    GOAL_CORE of a core over RAMP_WINDOW, and its share of a core from then on (None, None
    if it never did). Why: a cold worker's lanes start small (slow start, one TLS handshake
    per new connection), and whether the whole-campaign figure misses by that ramp or by
    the steady state is what says where to look."""
    start = 0
    for now, cpu in samples:
        while now - samples[start][0] > RAMP_WINDOW:
            start += 1
        then, cpu_then = samples[max(0, start - 1)]
        if now - then >= RAMP_WINDOW and (cpu - cpu_then) / (now - then) >= GOAL_CORE:
            last, cpu_last = samples[-1]
            after = (cpu_last - cpu_then) / (last - then) if last > then else None
            return then - samples[0][0], after
    return None, None


def reap(process: subprocess.Popen[bytes], timeout: float) -> float:
    """Wait for `process` with wait4 (Popen keeps no rusage); its CPU seconds, exec to exit."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            raise BenchmarkError(f"worker {process.pid} did not exit after its campaign was done")
        time.sleep(0.02)


# -- profiling -----------------------------------------------------------------------------------


def start_profiler(pid: int, prefix: Path) -> subprocess.Popen[bytes]:
    """py-spy on the worker (on the simulator's CPU, never the worker's), collapsed stacks."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    argv = [spy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw", "-o", f"{prefix}.txt"]
    with open(f"{prefix}.log", "wb") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(pinned(SIM_CPU, argv), stdout=subprocess.DEVNULL, stderr=log)
    time.sleep(0.5)  # let it attach before the first batch
    return process


# Where a sample's time went, by the frames on its stack (py-spy prints paths relative to
# sys.path: "redis/connection.py", "workers/jobs.py"). First match in this order wins, so a
# Redis call made from jobs.py counts as Redis and an HMAC inside encrypt() as encryption.
_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("encryption (workers.webpush.encrypt)", ("encrypt (workers/webpush.py",)),
    ("VAPID header (cached per origin)", ("authorization (workers/webpush.py",)),
    ("Redis (redis-py, store calls)", ("(redis/",)),
    ("TLS handshakes (one per connection)", ("do_handshake (ssl.py",)),
    ("lanes (workers/lanes.py)", ("(workers/lanes.py",)),
    (
        "HTTP client + TLS records (delivery.py, http1.py, ssl.py, asyncio)",
        ("(workers/delivery.py", "(workers/http1.py", "(ssl.py", "(asyncio/"),
    ),
    ("message + receipt per push", ("(workers/message.py", "(service/receipts.py")),
    (
        "batch bookkeeping (jobs, dispatch, batch, ledger)",
        ("workers/jobs.py:", "workers/dispatch.py:", "workers/batch.py:", "workers/ledger.py:"),
    ),
)
_IN_BATCH = "send_batch (workers/jobs.py"
# A stack whose leaf is send_batch's run_until_complete line is inside uvloop's C code
# (socket syscalls, scheduling), which py-spy cannot see into without --native.


def _category(frames: list[str]) -> str:
    leaf = frames[-1]
    for name, needles in _CATEGORIES:
        if any(needle in frame for frame in frames for needle in needles):
            if name.startswith("batch bookkeeping") and leaf.startswith(_IN_BATCH):
                return "event loop (uvloop C: sockets, scheduling)"
            return name
    if any("(rq/" in frame for frame in frames):
        return "RQ (worker loop, job fetch/finish)"
    if any("<frozen importlib" in frame for frame in frames):
        return "interpreter start-up (imports)"
    return "other"


def summarize_profile(path: Path, top: int = 12) -> dict[str, Any]:
    """Shares of py-spy samples by category, over the whole worker and inside `send_batch`,
    and the top leaf functions inside batches, from py-spy's collapsed stacks."""
    overall: Counter[str] = Counter()
    in_batch: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count, frames = int(count_text), stack.split(";")
        category = _category(frames)
        overall[category] += count
        if any(frame.startswith(_IN_BATCH) for frame in frames):
            in_batch[category] += count
            leaves[frames[-1]] += count

    def shares(counter: Counter[str]) -> dict[str, float]:
        total = sum(counter.values()) or 1
        return {name: count / total for name, count in counter.most_common()}

    batch_total = sum(in_batch.values()) or 1
    return {
        "samples": sum(overall.values()),
        "batch_samples": sum(in_batch.values()),
        "overall": shares(overall),
        "in_batch": shares(in_batch),
        "top_leaves_in_batch": [(leaf, count / batch_total) for leaf, count in leaves.most_common(top)],
    }


# -- the comparison senders ------------------------------------------------------------------------


def run_send_async(deployment: Deployment, sim: Any, subscriptions: list[dict[str, Any]], payload: bytes,
                   in_flight: int, latency_ms: float) -> Figure:  # fmt: skip
    spec = {
        "mode": "send_async",
        "subscriptions": subscriptions,
        "payload": base64.urlsafe_b64encode(payload).decode(),
        "in_flight": in_flight,
        "ca_file": sim.ca_file,
        "origin": sim.origin,
        "subject": SUBJECT,
        "vapid_key_path": str(deployment.key_path),
    }
    result = run_client(spec, deployment.workdir)
    if result["errors"]:
        raise BenchmarkError(f"send_async: client errors {result['errors']}")
    return Figure(f"{SEND_ASYNC} ({in_flight})", latency_ms, result["pushes"], result["wall"], result["cpu"])


def run_loop(deployment: Deployment, sim: Any, sample: list[dict[str, Any]], payload: bytes, total: int,
             latency_ms: float) -> Figure:  # fmt: skip
    spec = {
        "mode": "loop",
        "subscriptions": sample,
        "payload": base64.urlsafe_b64encode(payload).decode(),
        "subject": SUBJECT,
        "vapid_key_path": str(deployment.key_path),
    }
    result = run_client(spec, deployment.workdir, env={"REQUESTS_CA_BUNDLE": sim.ca_file})
    if result["errors"]:
        raise BenchmarkError(f"webpush() loop: client errors {result['errors']}")
    return Figure("plain webpush() loop", latency_ms, result["pushes"], result["wall"], result["cpu"], total)


def run_crypto(deployment: Deployment, subscriptions: list[dict[str, Any]], payload: bytes) -> dict[str, Any]:
    spec = {
        "mode": "crypto",
        "subscriptions": subscriptions[:CRYPTO_ITERATIONS],
        "payload": base64.urlsafe_b64encode(payload).decode(),
        "iterations": CRYPTO_ITERATIONS,
    }
    return run_client(spec, deployment.workdir)


# -- report --------------------------------------------------------------------------------------


def _rate(figure: Figure) -> str:
    text = f"{figure.pushes_per_s:>12,.0f}"
    return text + (" *" if figure.extrapolated_to else "  ")


def render(report: dict[str, Any], figures: list[Figure], crypto: dict[str, Any]) -> str:
    """The table and ratios `storypush bench` prints."""
    lines = [
        f"storypush fan-out benchmark: N={report['subscribers']:,} subscribers, storypush in-flight ceiling "
        f"{report['in_flight']} (STORYPUSH_MAX_IN_FLIGHT), send_async at {report['send_async_in_flight']}, "
        f"batch {report['batch_size']}, simulator verify={report['verify']}"
        + (f", latency spread σ={report['latency_spread']:g} (log-normal)" if report["latency_spread"] else ""),
        f"CPU: {report['cpu_model']} ({report['cpus']} CPUs); simulator on CPU {SIM_CPU}, each sender on CPU "
        f"{SENDER_CPU}; Python {report['python']}",
        f"load average {report['load_before']:.2f} before, {report['load_after']:.2f} after"
        + ("  (WARNING: other processes shared these cores; figures are noisy)" if report["busy"] else ""),
        "",
    ]
    header = (
        f"{'latency':>8}  {'sender':<28}{'pushes/s':>14}  {'CPU s / 1k pushes':>18}  {'core used':>9}  {'wall s':>8}"
    )
    lines.append(header)
    lines.append("-" * len(header))
    for latency in report["latencies_ms"]:
        for figure in (f for f in figures if f.latency_ms == latency):
            note = ""
            if figure.extrapolated_to:
                note = f"  ({figure.pushes} sampled; ~{figure.extrapolated_to / figure.pushes_per_s:,.0f} s for N)"
            lines.append(
                f"{latency:>6g}ms  {figure.sender:<28}{_rate(figure)}  {figure.cpu_per_1k:>18.3f}"
                f"  {figure.core:>9.0%}  {figure.wall:>8.2f}{note}"
            )
        floor = crypto[f"{latency:g}"]["encrypt_s"]
        lines.append(f"{'':>8}  {'crypto floor':<28}{1 / floor:>12,.0f}    {floor * 1000:>18.3f}")
        lines.append("")
    for latency, floor in crypto.items():
        lines.append(
            f"crypto floor beside the {latency} ms run: workers.webpush.encrypt {floor['encrypt_s'] * 1e6:.0f} µs/push;"
            f" pywebpush WebPusher.encode {floor['pywebpush_encode_s'] * 1e6:.0f} µs/push"
            f" ({floor['iterations']:,} iterations, one core)"
        )
    for figure in (f for f in figures if f.sender in ("storypush", WARM)):
        label = f"{figure.sender} at {figure.latency_ms:g} ms"
        if figure.ramp is None or figure.core_after_ramp is None:
            lines.append(f"{label}: its core was never {GOAL_CORE:.0%} busy")
            continue
        lines.append(
            f"{label}: core first {GOAL_CORE:.0%} busy {figure.ramp:.2f} s into the {figure.wall:.2f} s campaign,"
            f" {figure.core_after_ramp:.0%} of it from then on"
        )
    lines.append("* extrapolated from the sample: a per-push loop's rate does not depend on N")
    lines.append("")
    lines.append(
        "ratios (storypush ÷ other; core: storypush's rate ÷ its CPU-bound rate; CPU: per push ÷ crypto floor)"
    )
    for latency, ratios in report["ratios"].items():
        goals = report["goals"][latency]
        lines.append(
            f"  {latency:>4} ms: core {ratios['core']:.0%} ({_ok(goals['core'])} ≥{GOAL_CORE:.0%}), "
            f"×{ratios['vs_send_async']:.2f} the better send_async ({ratios['best_send_async']}; "
            f"{_ok(goals['vs_send_async'])} ≥{GOAL_VS_SEND_ASYNC}×), ×{ratios['vs_loop']:,.0f} plain loop "
            f"({_ok(goals['vs_loop'])} >{GOAL_VS_LOOP:.0f}×), CPU {ratios['cpu_vs_floor']:.2f}× floor "
            f"({_ok(goals['cpu_vs_floor'])} ≤{GOAL_CPU_VS_FLOOR}×)"
        )
        warm = ratios["next_campaign"]
        lines.append(
            f"          a running worker's next campaign: core {warm['core']:.0%}, ×{warm['vs_send_async']:.2f} the"
            f" better send_async, CPU {warm['cpu_vs_floor']:.2f}× floor (the goals above are the new worker's)"
        )
    return "\n".join(lines)


def _ok(flag: bool) -> str:
    return "met" if flag else "MISSED"


def render_profile(summary: dict[str, Any], latency: float, where: str) -> str:
    lines = [
        f"storypush worker profile at {latency:g} ms: {summary['samples']:,} py-spy samples, "
        f"{summary['batch_samples']:,} inside send_batch ({where})",
        "  inside send_batch:",
    ]
    lines += [f"  {share:>6.1%}  {name}" for name, share in summary["in_batch"].items()]
    lines.append("  whole worker process (start-up and RQ included):")
    lines += [f"  {share:>6.1%}  {name}" for name, share in summary["overall"].items()]
    lines.append("  top leaf functions inside send_batch:")
    lines += [f"  {share:>6.1%}  {leaf}" for leaf, share in summary["top_leaves_in_batch"]]
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="storypush bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=20_000, help="N, the audience (default 20000)")
    parser.add_argument(
        "--latency-ms",
        default="40,150",
        type=lambda text: [float(x) for x in text.split(",") if x.strip()],
        help="push-service answer delays to run at, comma-separated (default 40,150: real services answer in 40-150)",
    )
    parser.add_argument(
        "--latency-spread",
        type=float,
        default=0.0,
        metavar="SIGMA",
        help="spread each answer's delay log-normally around the latency, σ (0.5: a tenth of answers past 1.9× it;"
        " default 0: every answer takes exactly the latency)",
    )
    parser.add_argument("--sample", type=int, default=200, help="subscribers for the plain webpush() loop")
    parser.add_argument(
        "--in-flight",
        type=int,
        default=2000,
        help="storypush's STORYPUSH_MAX_IN_FLIGHT, the ceiling its lanes adapt under (default 2000)",
    )
    parser.add_argument(
        "--send-async-in-flight",
        default="200,1000",
        type=lambda text: [int(x) for x in text.split(",") if x.strip()],
        help="pywebpush send_async's concurrency, one run each (default 200,1000); ratios use the better",
    )
    parser.add_argument("--batch-size", type=int, default=500, help="storypush batch size (default 500)")
    parser.add_argument(
        "--verify", default="sample:50", help="simulator decryption: sample:N, deferred or all (default sample:50)"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="PREFIX",
        help="also run one unmeasured storypush campaign under py-spy; writes PREFIX.txt (collapsed stacks)",
    )
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args(argv)
    if not 0 <= args.latency_spread <= 3:
        parser.error("--latency-spread takes a σ between 0 and 3")
    if args.subscribers < 1 or args.sample < 1 or args.in_flight < 1 or not args.latency_ms:
        parser.error("--subscribers, --sample and --in-flight must be positive; give at least one latency")
    if not args.send_async_in_flight or min(args.send_async_in_flight) < 1:
        parser.error("--send-async-in-flight takes positive whole numbers")
    return args


def main(argv: list[str]) -> int:
    """Run the benchmark; 0 when it ran (goals are reported, not enforced), 1 on a failed run.
    With `--bad-origin hang|throttle`, the two-origin scenario of `benchmarks.bad_origin`."""
    if any(arg == "--bad-origin" or arg.startswith("--bad-origin=") for arg in argv):
        from benchmarks.bad_origin import main as bad_origin_main

        return bad_origin_main(argv)
    args = parse_args(argv)
    from benchmarks.pushsim.client import PushSimulator

    n = args.subscribers
    load_before = os.getloadavg()[0]
    figures: list[Figure] = []
    crypto: dict[str, dict[str, Any]] = {}  # per latency ("40"): the floor measured beside that run
    profile_summary = None
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="storypush-bench-"))
        stack.callback(shutil.rmtree, workdir, True)
        sim = stack.enter_context(PushSimulator(latency_ms=args.latency_ms[0], cpu=SIM_CPU, verify=args.verify))
        try:
            deployment = Deployment(workdir, sim, args.batch_size, args.in_flight)
            stack.callback(deployment.close)
            print(f"setup: minting and storing {n:,} subscribers ...", file=sys.stderr, flush=True)
            subscriptions = sim.mint(n, deployment.key.public_bytes)
            deployment.store_subscriptions(subscriptions)
            sample = subscriptions[: min(args.sample, n)]
            payload = b""
            for latency in args.latency_ms:
                sim.set_latency(latency, spread=args.latency_spread)
                sim.reset()
                story_id = f"bench-{uuid.uuid4().hex[:8]}"
                campaign_id = deployment.publish(story_id)
                payload = deployment.payload_like(campaign_id, story_id, n)
                print(f"{latency:g} ms: storypush ...", file=sys.stderr, flush=True)
                figure = deployment.run_campaign(campaign_id, n, latency)
                check_delivered(sim, n, f"storypush at {latency:g} ms")
                figures.append(figure)
                # The floor right beside the run it is the denominator of: this machine's speed
                # drifts by a fifth over minutes (a neighbour's load), and a ratio of two
                # figures taken minutes apart carried that drift.
                print(f"{latency:g} ms: crypto floor ...", file=sys.stderr, flush=True)
                crypto[f"{latency:g}"] = run_crypto(deployment, subscriptions, payload)
                sim.reset()
                print(f"{latency:g} ms: storypush, a running worker's next campaign ...", file=sys.stderr, flush=True)
                figures.append(deployment.run_warm_campaign(sim, n, latency))
                check_delivered(sim, n, f"storypush's next campaign at {latency:g} ms")
                for in_flight in args.send_async_in_flight:
                    sim.reset()
                    print(f"{latency:g} ms: pywebpush send_async at {in_flight} ...", file=sys.stderr, flush=True)
                    figures.append(run_send_async(deployment, sim, subscriptions, payload, in_flight, latency))
                    check_delivered(sim, n, f"send_async ({in_flight}) at {latency:g} ms")
                sim.reset()
                print(f"{latency:g} ms: plain webpush() loop over {len(sample)} ...", file=sys.stderr, flush=True)
                figures.append(run_loop(deployment, sim, sample, payload, n, latency))
                check_delivered(sim, len(sample), f"webpush() loop at {latency:g} ms")
            if args.profile is not None:
                latency = args.latency_ms[-1]
                print(f"{latency:g} ms: storypush under py-spy (not measured) ...", file=sys.stderr, flush=True)
                sim.set_latency(latency, spread=args.latency_spread)
                sim.reset()
                story_id = f"bench-profile-{uuid.uuid4().hex[:8]}"
                deployment.run_campaign(deployment.publish(story_id), n, latency, profile=args.profile)
                check_delivered(sim, n, f"profiled storypush at {latency:g} ms")
                profile_summary = summarize_profile(Path(f"{args.profile}.txt"))
        except BenchmarkError as exc:
            print(f"storypush bench: FAILED: {exc}", file=sys.stderr)
            return 1
    report = build_report(args, figures, crypto)
    report["load_before"], report["load_after"] = load_before, os.getloadavg()[0]
    # The benchmark itself keeps ~2 processes busy; more than that is someone else.
    report["busy"] = max(load_before, report["load_after"]) > (os.cpu_count() or 1) + 0.5
    print(render(report, figures, crypto))
    if profile_summary is not None:
        print()
        print(render_profile(profile_summary, args.latency_ms[-1], f"stacks in {args.profile}.txt"))
        report["profile"] = profile_summary
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


def build_report(args: argparse.Namespace, figures: list[Figure], crypto: dict[str, Any]) -> dict[str, Any]:
    """Everything measured, with the ratios and goal checks, as plain data (for --json)."""
    ratios: dict[str, dict[str, Any]] = {}
    goals: dict[str, dict[str, bool]] = {}
    for latency in args.latency_ms:
        here = [f for f in figures if f.latency_ms == latency]
        ours = next(f for f in here if f.sender == "storypush")
        warm = next(f for f in here if f.sender == WARM)
        best = max((f for f in here if f.sender.startswith(SEND_ASYNC)), key=lambda f: f.pushes_per_s)
        loop = next(f for f in here if f.sender == "plain webpush() loop")
        key = f"{latency:g}"
        floor = crypto[key]["encrypt_s"]
        ratios[key] = {
            "core": ours.core,
            "best_send_async": best.sender.removeprefix(SEND_ASYNC).strip(" ()") + " in flight",
            "vs_send_async": ours.pushes_per_s / best.pushes_per_s,
            "vs_loop": ours.pushes_per_s / loop.pushes_per_s,
            "cpu_vs_floor": (ours.cpu / ours.pushes) / floor,
            "next_campaign": {
                "core": warm.core,
                "vs_send_async": warm.pushes_per_s / best.pushes_per_s,
                "cpu_vs_floor": (warm.cpu / warm.pushes) / floor,
            },
        }
        goals[key] = {
            "core": ours.core >= GOAL_CORE,
            "vs_send_async": ratios[key]["vs_send_async"] >= GOAL_VS_SEND_ASYNC,
            "vs_loop": ratios[key]["vs_loop"] > GOAL_VS_LOOP,
            "cpu_vs_floor": ratios[key]["cpu_vs_floor"] <= GOAL_CPU_VS_FLOOR,
        }
    return {
        "subscribers": args.subscribers,
        "latencies_ms": args.latency_ms,
        "in_flight": args.in_flight,
        "send_async_in_flight": args.send_async_in_flight,
        "batch_size": args.batch_size,
        "sample": args.sample,
        "verify": args.verify,
        "latency_spread": args.latency_spread,
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "figures": [
            {**asdict(f), "pushes_per_s": f.pushes_per_s, "cpu_s_per_1k": f.cpu_per_1k, "core": f.core} for f in figures
        ],
        "crypto": crypto,
        "ratios": ratios,
        "goals": goals,
    }

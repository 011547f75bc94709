"""Load on `POST /api/v1/subscriptions` through the real stack (goal: >= 1,500 req/s, p99 < 50 ms).

    python -m benchmarks.subscribe_load [--seconds 10] [--concurrency 32] [--workers N]

Starts `storypush web` (gunicorn) against its own embedded Redis in a temp data dir,
then drives it from a separate load-generator process (so the generator's CPU is not
counted against the server; `--pin` pins it to one core with taskset). The generator
is asyncio over raw sockets: an HTTP client library would cost more CPU per request
than the server under test on a 2-core machine.

Request bodies are real: 2,000 P-256 keypairs are made up front (too slow to make per
request) and each request gets a fresh, realistic FCM endpoint, so every answer is a
201 create that runs validation, the rate limiter and the upsert script.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

SUBJECT = "mailto:bench@publisher.example.org"
GOAL_RPS = 1_500
GOAL_P99_MS = 50.0
_CONFIG_VARS = ("REDIS_URL", "STORYPUSH_STORE_URL", "STORYPUSH_VAPID_PRIVATE_KEY", "STORYPUSH_TRUSTED_PROXIES")


# --- the load generator (runs in its own process) ----------------------------------------


def _body_parts(pool: int, seed: int) -> list[tuple[bytes, bytes]]:
    """(before endpoint token, after it) JSON fragments for `pool` real subscriber keypairs."""
    from benchmarks.pushsim.crypto import SubscriberKeys, b64url_encode

    rng = random.Random(seed)
    topics = ["news", "entertainment", "tv-and-film", "animals", "sport", "lifestyle"]
    parts = []
    for _ in range(pool):
        keys = SubscriberKeys.generate()
        subscription = {
            "endpoint": "https://fcm.googleapis.com/fcm/send/ENDPOINT",
            "expirationTime": None,
            "keys": {"p256dh": b64url_encode(keys.p256dh), "auth": b64url_encode(keys.auth)},
        }
        body = {
            "subscription": subscription,
            "topics": rng.sample(topics, rng.randint(1, 3)),
            "locale": "en-GB",
            "timezone": "Europe/London",
        }
        before, after = json.dumps(body, separators=(",", ":")).split("ENDPOINT")
        parts.append((before.encode(), after.encode()))
    return parts


def _request(host: str, port: int, body: bytes) -> bytes:
    return (
        f"POST /api/v1/subscriptions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


async def _drive(host: str, port: int, seconds: float, concurrency: int, max_requests: int, pool: int) -> dict:
    parts = _body_parts(pool, seed=os.getpid())
    # A unique 152-char FCM token per request: run prefix + counter, padded.
    run = os.urandom(6).hex()
    counter = iter(range(10**12))
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    deadline = 0.0

    async def one() -> None:
        n = next(counter)
        before, after = parts[n % len(parts)]
        token = f"{run}{n:010d}:APA91b".ljust(152, "x").encode()
        request = _request(host, port, before + token + after)
        started = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            response = await reader.read()  # the server closes after answering
            writer.close()
            status = response[9:12].decode() if response.startswith(b"HTTP/1.") else "bad-response"
        except OSError as exc:
            status = f"error:{type(exc).__name__}"
        latencies.append(time.perf_counter() - started)
        statuses[status] += 1

    async def client() -> None:
        while time.perf_counter() < deadline and sum(statuses.values()) < max_requests:
            await one()

    # Warm up (imports, connection pools, script cache in every worker), then measure.
    deadline = time.perf_counter() + 1.0
    await asyncio.gather(*(client() for _ in range(concurrency)))
    warmup_requests = len(latencies)
    statuses.clear()
    latencies.clear()
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")

    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] * 1000 if latencies else float("nan"),
        "statuses": dict(statuses),
        "warmup_requests": warmup_requests,
    }


def loadgen_main(argv: Sequence[str]) -> int:
    """Entry point of the generator process: prints one JSON line of results."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument("--pool", type=int, default=2_000)
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(_drive(args.host, args.port, args.seconds, args.concurrency, args.max_requests, args.pool))
    print(json.dumps(result), flush=True)
    return 0


# --- the orchestrator --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"storypush web did not answer /healthz on port {port} within {timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _stop_redis(data_dir: Path) -> None:
    """`storypush web` leaves the embedded Redis running for the next start; we do not want it."""
    import redis

    from service.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis(data_dir)
    if server.ping():
        client = redis.Redis.from_url(server.url)
        with contextlib.suppress(redis.ConnectionError, redis.ResponseError):
            client.shutdown(nosave=True)


def _tree_cpu_seconds(root_pid: int, data_dir: Path) -> float:
    """user+system CPU of gunicorn (master and workers) and the embedded redis-server.

    Reported per request, it is the server's cost independent of how busy the machine is.
    """
    import psutil

    procs = [psutil.Process(root_pid), *psutil.Process(root_pid).children(recursive=True)]
    pid_file = data_dir / "redis" / "redis.pid"
    if pid_file.exists():
        procs.append(psutil.Process(int(pid_file.read_text())))
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--loadgen"]:
        return loadgen_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m benchmarks.subscribe_load", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="measured duration (after 1 s of warm-up)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--max-requests", type=int, default=200_000, help="stop after this many, whatever the time")
    parser.add_argument(
        "--workers", type=int, default=None, help="gunicorn workers (default: storypush web's, 2 x CPUs)"
    )
    parser.add_argument("--pool", type=int, default=2_000, help="P-256 keypairs to make up front")
    parser.add_argument("--pin", default=None, help="taskset CPU list for the load generator, e.g. 1")
    args = parser.parse_args(argv)

    workers = args.workers or 2 * (os.cpu_count() or 1)
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="storypush-load-") as tmp:
        data_dir = Path(tmp) / "var"
        env = {k: v for k, v in os.environ.items() if k not in _CONFIG_VARS}
        env.update(
            STORYPUSH_DATA_DIR=str(data_dir),
            STORYPUSH_VAPID_SUBJECT=SUBJECT,
            STORYPUSH_RATE_LIMIT="1000000000",
            STORYPUSH_NEW_SUBSCRIPTIONS_PER_MINUTE="0",  # the global ceiling would refuse the load itself
            PYTHONUNBUFFERED="1",
        )
        cli = [sys.executable, "-m", "service.cli"]
        subprocess.run([*cli, "vapid", "init"], env=env, check=True, stdout=subprocess.DEVNULL)
        server = subprocess.Popen(
            [*cli, "web", "--port", str(port), "--workers", str(workers)], env=env, start_new_session=True
        )
        try:
            _wait_healthy(port)
            command = [sys.executable, "-m", "benchmarks.subscribe_load", "--loadgen", "--port", str(port)]
            command += ["--seconds", str(args.seconds), "--concurrency", str(args.concurrency)]
            command += ["--max-requests", str(args.max_requests), "--pool", str(args.pool)]
            if args.pin:
                if not shutil.which("taskset"):
                    raise SystemExit("--pin needs taskset (util-linux)")
                command = ["taskset", "-c", args.pin, *command]
            print(
                f"storypush web: {workers} gunicorn workers on port {port}; "
                f"load: {args.concurrency} in flight for {args.seconds:g} s"
                f"{', generator pinned to CPU ' + args.pin if args.pin else ''}; making {args.pool} keypairs ...",
                flush=True,
            )
            load_before = os.getloadavg()[0]
            cpu_before = _tree_cpu_seconds(server.pid, data_dir)
            generated = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
            # Includes the 1 s warm-up and keypair making (server idle then), so a slight overestimate.
            server_cpu = _tree_cpu_seconds(server.pid, data_dir) - cpu_before
            result = json.loads(generated.stdout.strip().splitlines()[-1])
        finally:
            _stop(server)
            _stop_redis(data_dir)

    server_errors = sum(n for status, n in result["statuses"].items() if not status.startswith(("2", "4")))
    print(f"requests     {result['requests']:,} in {result['seconds']:.1f} s = {result['rps']:,.0f} req/s")
    print(
        f"latency      p50 {result['p50_ms']:.1f} ms, p90 {result['p90_ms']:.1f} ms, "
        f"p99 {result['p99_ms']:.1f} ms, max {result['max_ms']:.1f} ms"
    )
    print(f"statuses     {json.dumps(dict(sorted(result['statuses'].items())))}")
    warm = result["requests"] + result.get("warmup_requests", 0)
    cpu_ms = server_cpu / max(1, warm) * 1000
    ceiling = (os.cpu_count() or 1) / cpu_ms * 1000
    print(
        f"server CPU   {cpu_ms:.2f} ms per request (gunicorn + redis) -> at most ~{ceiling:,.0f}"
        f" req/s on {os.cpu_count()} idle CPUs; load average before the run {load_before:.1f}"
    )
    ok = result["rps"] >= GOAL_RPS and result["p99_ms"] < GOAL_P99_MS and server_errors == 0
    print(
        f"goal >= {GOAL_RPS:,} req/s with p99 < {GOAL_P99_MS:.0f} ms and no 5xx/errors: {'OK' if ok else 'MISSED'} "
        f"({workers} gunicorn workers, {os.cpu_count()} CPUs)"
    )
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())

"""How many bytes of Redis memory one subscriber costs, indexes included (goal: <= 400).

    python -m benchmarks.store_memory [--n 100000] [--redis-url unix:///path/redis.sock]

Writes N subscriptions with a realistic endpoint mix through `SubscriptionStore.upsert`
(the same Lua script the API uses), then reports the `INFO memory` used_memory delta
per subscriber and a `MEMORY USAGE` breakdown by key family. Writer processes (one per
CPU) call `upsert` with its script's calls queued on a pipeline, 500 to a round trip
(`upsert(..., pipe=)`), and a sample is read back to
prove the batched path stored exactly what `upsert` means.

The p256dh keys are 65 random bytes behind 0x04, not real P-256 points: the store
keeps them as opaque bytes, so memory is identical, and 100k real keys would take
longer to make than to store.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

import redis

from benchmarks.common import LOCALES, fmt_bytes, private_redis, realistic_endpoint
from service.store import keys
from service.store.subscription_store import SubscriptionStore
from service.subscriptions import Subscription
from service.topics import DEFAULT_TOPICS

TOPIC_IDS = [id_ for id_, _ in DEFAULT_TOPICS]
GOAL_BYTES = 400


def make_subscriptions(n: int, seed: int = 1) -> list[Subscription]:
    """`n` subscriptions: the push-service mix, 1-3 topics, a locale and time zone each."""
    rng = random.Random(seed)
    subscriptions = []
    for _ in range(n):
        locale, timezone = rng.choice(LOCALES)
        subscriptions.append(
            Subscription(
                endpoint=realistic_endpoint(rng),
                p256dh=b"\x04" + rng.randbytes(64),
                auth=rng.randbytes(16),
                topics=tuple(rng.sample(TOPIC_IDS, rng.randint(1, 3))),
                locale=locale,
                timezone=timezone,
            )
        )
    return subscriptions


def _settled_used_memory(client: redis.Redis, timeout: float = 10.0) -> int:
    """used_memory once the keyspace dict has finished growing: mid-rehash Redis holds
    the old and the new table at once, which once read as 476 B instead of 371 B."""
    deadline = time.monotonic() + timeout
    previous = -1
    while time.monotonic() < deadline:
        used = int(client.info("memory")["used_memory"])
        if used == previous:
            return used
        previous = used
        time.sleep(0.5)  # activerehashing works in the server's 100 ms cron
    return previous


def _write(client_url: str, chunk: Sequence[Subscription], batch: int) -> int:
    """Upsert `chunk` in pipelined batches of `batch`; returns how many were created."""
    client = redis.Redis.from_url(client_url)
    store = SubscriptionStore(client, TOPIC_IDS)
    created = 0
    for start in range(0, len(chunk), batch):
        pipe = client.pipeline(transaction=False)
        for subscription in chunk[start : start + batch]:
            store.upsert(subscription, pipe=pipe)
        created += sum(int(flag) for _, flag in pipe.execute())
    client.close()
    return created


def _write_process(client_url: str, n: int, seed: int, batch: int) -> tuple[int, int, list[Subscription], float]:
    """One writer process: makes its own `n` subscriptions (cheaper than pickling them
    over) and upserts them. Returns (created, endpoint characters, a few to check,
    seconds spent writing)."""
    subscriptions = make_subscriptions(n, seed=seed)
    started = time.perf_counter()
    created = _write(client_url, subscriptions, batch)
    elapsed = time.perf_counter() - started
    sample = random.Random(seed).sample(subscriptions, min(50, n))
    return created, sum(len(s.endpoint) for s in subscriptions), sample, elapsed


def _url_of(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    return f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


def _memory_usage(client: redis.Redis, names: Sequence[bytes]) -> int:
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.memory_usage(name, samples=0)
    return sum(int(n or 0) for n in pipe.execute())


def _redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _scan(client: redis.Redis, pattern: str) -> list[bytes]:
    return list(client.scan_iter(match=pattern, count=10_000))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.store_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="subscriptions to write (default 100000)")
    parser.add_argument("--redis-url", default=None, help="an empty Redis database (default: a fresh embedded one)")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="writer processes")
    parser.add_argument("--batch", type=int, default=500, help="upserts per pipeline round trip")
    parser.add_argument("--sample", type=int, default=2_000, help="record keys to sample with MEMORY USAGE")
    args = parser.parse_args(argv)

    with private_redis(args.redis_url) as client:
        url = _url_of(client)
        SubscriptionStore(client, TOPIC_IDS).count()  # connected; the upsert script loads on first use
        before = int(client.info("memory")["used_memory"])
        cpu_before = _redis_cpu(client)
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        shares = [args.n // args.processes + (i < args.n % args.processes) for i in range(args.processes)]
        with ProcessPoolExecutor(args.processes) as pool:
            futures = [pool.submit(_write_process, url, share, i + 1, args.batch) for i, share in enumerate(shares)]
            results = [future.result() for future in futures]
        total = time.perf_counter() - started
        elapsed = max(r[3] for r in results)  # writing only; generation ran in the same processes
        redis_cpu = _redis_cpu(client) - cpu_before
        created = sum(r[0] for r in results)
        endpoint_length = sum(r[1] for r in results) / args.n
        after = _settled_used_memory(client)
        if created != args.n:
            print(f"error: {created} created, expected {args.n}", file=sys.stderr)
            return 1
        # The batched path must store exactly what a plain upsert would: read some back.
        store = SubscriptionStore(client, TOPIC_IDS)
        for subscription in (s for r in results for s in r[2]):
            found = store.get_by_endpoint(subscription.endpoint)
            if found is None or found[1] != subscription:
                print(f"error: a subscription did not read back intact (id {found and found[0]})", file=sys.stderr)
                return 1

        rng = random.Random(2)
        sample_ids = rng.sample(range(1, args.n + 1), min(args.sample, args.n))
        record_bytes = _memory_usage(client, [keys.subscription(i).encode() for i in sample_ids]) / len(sample_ids)
        buckets = _scan(client, f"{keys.PREFIX}ep:*")
        bucket_bytes = _memory_usage(client, buckets)
        encodings = {client.object("encoding", name).decode() for name in buckets[:200]}
        topic_bytes = _memory_usage(client, [keys.topic(t).encode() for t in TOPIC_IDS])
        info = client.info("memory")
        version = client.info("server")["redis_version"]

    per_sub = (after - before) / args.n
    print(
        f"redis {version}: {args.n:,} subscriptions written in {elapsed:.1f} s ({args.n / elapsed:,.0f}/s; "
        f"{total:.1f} s with generating them)"
    )
    print(
        f"redis-server CPU {redis_cpu:.1f} s ({redis_cpu / args.n * 1e6:.0f} us per upsert); "
        f"load average before {load_before:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"mean endpoint length {endpoint_length:.0f} chars; mix fcm/mozilla/apple 70/20/10; 1-3 topics")
    print(f"used_memory delta:       {fmt_bytes(after - before)}  = {per_sub:.0f} B per subscription")
    print("MEMORY USAGE breakdown (per subscription):")
    print(f"  record key sp:s:<id>     {record_bytes:6.0f} B   (mean of {len(sample_ids)} sampled keys)")
    print(
        f"  endpoint index buckets   {bucket_bytes / args.n:6.1f} B   "
        f"({len(buckets)} hashes, {fmt_bytes(bucket_bytes)}, encoding {', '.join(sorted(encodings))})"
    )
    print(
        f"  topic bitmaps            {topic_bytes / args.n:6.1f} B   "
        f"({len(TOPIC_IDS)} bitmaps, {fmt_bytes(topic_bytes)})"
    )
    accounted = record_bytes + (bucket_bytes + topic_bytes) / args.n
    print(f"  sum                      {accounted:6.0f} B   (the rest of the delta is keyspace dict overhead)")
    print(
        f"allocator fragmentation ratio {info.get('allocator_frag_ratio', '?')}, "
        f"rss {fmt_bytes(info['used_memory_rss'])}"
    )
    verdict = "OK" if per_sub <= GOAL_BYTES else "OVER"
    print(f"goal <= {GOAL_BYTES} B per subscription: {verdict} ({per_sub:.0f} B)")
    return 0 if per_sub <= GOAL_BYTES else 2


if __name__ == "__main__":
    sys.exit(main())

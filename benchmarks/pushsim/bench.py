"""Throughput of the simulator alone: aiohttp at N in flight on kept-alive HTTPS connections.

    python -m benchmarks.pushsim.bench --n 20000 --inflight 200 --verify all --server-cpu 0 --client-cpu 1

Bodies are encrypted and the JWT signed before the clock starts, so the figure is the
simulator's (and this client's) cost per POST. The server's own CPU time is read from
psutil, giving its capacity even when this single-process client is the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Iterator

import aiohttp
import http_ece
import psutil
import uvloop
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

from benchmarks.pushsim.client import PushSimulator
from benchmarks.pushsim.crypto import b64url_decode, public_bytes


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def _prepare(sim: PushSimulator, n: int) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
    vapid = Vapid02()
    vapid.generate_keys()
    subscriptions = sim.mint(n, public_bytes(vapid.private_key))
    headers = vapid.sign({"aud": sim.origin, "exp": int(time.time()) + 3600, "sub": "mailto:bench@example.org"})
    headers.update({"TTL": "3600", "Content-Encoding": "aes128gcm", "Urgency": "normal"})
    requests = []
    for index, subscription in enumerate(subscriptions):
        payload = b'{"v": 1, "title": "bench %d", "body": "%s"}' % (index, b"x" * 200)
        body = http_ece.encrypt(
            payload,
            private_key=ec.generate_private_key(ec.SECP256R1()),
            dh=b64url_decode(subscription["keys"]["p256dh"]),
            auth_secret=b64url_decode(subscription["keys"]["auth"]),
            version="aes128gcm",
        )
        requests.append((subscription["endpoint"], body))
    return requests, headers


async def _blast(
    sim: PushSimulator, requests: list[tuple[str, bytes]], headers: dict[str, str], inflight: int
) -> tuple[dict[int, int], float, float]:
    """POST everything at `inflight` concurrency; returns statuses, wall and server CPU seconds.

    The first `inflight` requests open the connections (TLS handshakes) and are not timed,
    so the figures are for kept-alive connections, the case the sender runs in.
    """
    connector = aiohttp.TCPConnector(limit=inflight, ssl=sim.ssl_context())
    statuses: dict[int, int] = {}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post(url: str, body: bytes) -> None:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1

        async def worker(queue: Iterator[tuple[str, bytes]]) -> None:
            for url, body in queue:
                await post(url, body)

        await asyncio.gather(*(post(url, body) for url, body in requests[:inflight]))
        cpu_before = _cpu_seconds(sim.pid)
        started = time.perf_counter()
        queue = iter(requests[inflight:])
        await asyncio.gather(*(worker(queue) for _ in range(inflight)))
        elapsed = time.perf_counter() - started
        server_cpu = _cpu_seconds(sim.pid) - cpu_before
    return statuses, elapsed, server_cpu


async def _blast_raw(
    sim: PushSimulator, requests: list[tuple[str, bytes]], headers: dict[str, str], inflight: int
) -> tuple[dict[int, int], float, float]:
    """Like `_blast` with a bare-bones HTTP/1.1 client (prebuilt bytes, one request at a time
    per kept-alive connection), cheap enough that the simulator, not the client, saturates."""
    statuses: dict[int, int] = {}
    header_block = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    wires = [
        (
            f"POST {url[len(sim.origin) :]} HTTP/1.1\r\nHost: 127.0.0.1:{sim.port}\r\n{header_block}"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for url, body in requests
    ]
    context = sim.ssl_context()
    connections = [await asyncio.open_connection("127.0.0.1", sim.port, ssl=context) for _ in range(inflight)]

    async def post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, wire: bytes) -> None:
        writer.write(wire)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        await reader.readexactly(length)
        statuses[status] = statuses.get(status, 0) + 1

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, queue: Iterator[bytes]) -> None:
        for wire in queue:
            await post(reader, writer, wire)

    await asyncio.gather(*(post(r, w, wire) for (r, w), wire in zip(connections, wires, strict=False)))
    cpu_before = _cpu_seconds(sim.pid)
    started = time.perf_counter()
    queue = iter(wires[inflight:])
    await asyncio.gather(*(worker(r, w, queue) for r, w in connections))
    elapsed = time.perf_counter() - started
    server_cpu = _cpu_seconds(sim.pid) - cpu_before
    for _, writer in connections:
        writer.close()
    return statuses, elapsed, server_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--inflight", type=int, default=200)
    parser.add_argument("--verify", default="all")
    parser.add_argument("--server-cpu", type=int, default=None)
    parser.add_argument("--client-cpu", type=int, default=None)
    parser.add_argument("--client", choices=["aiohttp", "raw"], default="aiohttp")
    args = parser.parse_args()
    if args.client_cpu is not None:
        os.sched_setaffinity(0, {args.client_cpu})
    with PushSimulator(cpu=args.server_cpu, verify=args.verify) as sim:
        requests, headers = _prepare(sim, args.n + args.inflight)
        blast = _blast if args.client == "aiohttp" else _blast_raw
        statuses, elapsed, server_cpu = uvloop.run(blast(sim, requests, headers, args.inflight))
        settle_started = time.perf_counter()
        stats = sim.stats()  # runs deferred decryption, if any
        settle = time.perf_counter() - settle_started
    print(f"client={args.client} verify={args.verify} n={args.n} inflight={args.inflight} statuses={statuses}")
    print(f"timed {args.n} on warm connections: {elapsed:.2f}s -> {args.n / elapsed:,.0f} POST/s")
    print(
        f"server CPU {server_cpu:.2f}s -> {server_cpu / args.n * 1e6:.0f} us/POST"
        f" -> capacity ~{args.n / server_cpu:,.0f} POST/s/core"
    )
    print(
        f"delivered={stats['delivered']} decrypted={stats['decrypted']} decrypt_errors={stats['decrypt_errors']} "
        f"stats call {settle:.2f}s"
    )


if __name__ == "__main__":
    main()

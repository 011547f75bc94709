"""What a new HTTPS connection to a push service costs the sender, in CPU, with and
without TLS session resumption.

    python -m benchmarks.connections [--connections 1000] [--rounds 4] [--latency-ms 150]

Why: HTTP/1.1 carries one request at a time, so a worker with 1,000 pushes in flight
holds 1,000 connections, and a new worker opens them all in its first second. Whole
campaigns vary by a tenth from run to run on these machines, more than a connection's
share of them, so this measures the connection alone: `HttpSender` (the worker's own
client, lanes opened wide) sends one push to make a session, then N pushes at once, each
on a new connection, then N more on the same, now kept-alive, connections. (CPU of the
first N − CPU of the second N) ÷ N is what one new connection costs beyond a push. The
modes alternate round by round, so the machine's drift falls on both alike.

The sender runs in this process, pinned to one CPU, the simulator on the other.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import statistics
import sys
import time

import uvloop

from benchmarks.common import subscription_of
from benchmarks.pushsim import PushSimulator
from benchmarks.pushsim.crypto import public_bytes
from service.subscriptions import Subscription
from workers.delivery import HttpSender, Outcome
from workers.http1 import default_ssl_context
from workers.lanes import LanePolicy
from workers.message import PushHeaders
from workers.webpush import VapidHeaders

HEADERS = PushHeaders(ttl=60, urgency="normal", topic="A" * 32)
SENDER_CPU, SIM_CPU = 1, 0


async def _one_round(sender: HttpSender, subscriptions: list[Subscription]) -> tuple[float, float, int]:
    """(CPU seconds for N pushes on new connections, for N on kept-alive ones, resumed)."""
    first = await sender.send(subscriptions[0], b"{}", HEADERS)  # its connection brings a ticket
    began = time.process_time()
    fresh = await asyncio.gather(*(sender.send(s, b"{}", HEADERS) for s in subscriptions))
    middle = time.process_time()
    kept = await asyncio.gather(*(sender.send(s, b"{}", HEADERS) for s in subscriptions))
    ended = time.process_time()
    results = [first, *fresh, *kept]
    if any(result.outcome is not Outcome.SENT for result in results):
        raise SystemExit(f"not every push was sent: {sorted({r.reason for r in results})}")
    [pool] = sender._pools.values()
    resumed = sum(bool(c.transport.get_extra_info("ssl_object").session_reused) for c in pool.idle if c.transport)
    sender.close()
    await asyncio.sleep(0.2)  # let the closes go out before the loop ends
    return middle - began, ended - middle, resumed


def _full_handshakes() -> ssl.SSLContext:
    """The worker's context but for resuming: the same checks, the same ALPN."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


def measure(connections: int, rounds: int, latency_ms: float) -> dict[str, list[float]]:
    """Microseconds of CPU per new connection, per round, for each mode."""
    from cryptography.hazmat.primitives.asymmetric import ec

    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > SENDER_CPU:
        os.sched_setaffinity(0, {SENDER_CPU})
    key = ec.generate_private_key(ec.SECP256R1())
    per_connection: dict[str, list[float]] = {"full handshake": [], "resumed": []}
    with PushSimulator(latency_ms=latency_ms, cpu=SIM_CPU, verify="sample:5") as sim:
        os.environ["SSL_CERT_FILE"] = sim.ca_file  # trusted as the worker trusts it
        subscriptions = [subscription_of(s) for s in sim.mint(connections, public_bytes(key.public_key()))]
        host = sim.origin.removeprefix("https://")
        policy = LanePolicy(initial_limit=connections, first_contact=connections, ceiling=connections)
        for round_ in range(rounds):
            for mode in per_connection:
                context = default_ssl_context() if mode == "resumed" else _full_handshakes()
                sender = HttpSender(VapidHeaders(key, "mailto:bench@example.com"), policy, (host,), context)
                fresh, kept, resumed = uvloop.run(_one_round(sender, subscriptions))
                cost = (fresh - kept) / connections * 1e6
                per_connection[mode].append(cost)
                print(
                    f"round {round_ + 1}, {mode}: {cost:.0f} µs per connection"
                    f" ({resumed} of {connections} connections resumed)",
                    file=sys.stderr,
                    flush=True,
                )
                sim.reset()
    return per_connection


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.connections", description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000, help="N, connections opened at once (default 1000)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of each mode, alternating (default 4)")
    parser.add_argument("--latency-ms", type=float, default=150.0, help="the simulator's answer delay (default 150)")
    args = parser.parse_args(argv)
    if args.connections < 2 or args.rounds < 1 or args.latency_ms < 0:
        parser.error("--connections must be at least 2, --rounds at least 1, --latency-ms not negative")
    results = measure(args.connections, args.rounds, args.latency_ms)
    full, resumed = statistics.median(results["full handshake"]), statistics.median(results["resumed"])
    print(f"CPU per new connection, {args.connections:,} at once, median of {args.rounds} rounds each:")
    for mode, costs in results.items():
        print(f"  {mode:<15} {statistics.median(costs):6.0f} µs  (rounds: {', '.join(f'{c:.0f}' for c in costs)})")
    print(f"  resumed ÷ full: {resumed / full:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

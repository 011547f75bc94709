"""`storypush bench --bad-origin hang|throttle|slow`: one misbehaving push service beside a healthy one.

The simulator serves two origins. 5/6 of the subscribers are on the healthy one and 1/6
on the bad one, interleaved so every batch holds both. One `storypush worker` (pinned to
CPU 1) sends two campaigns: first to the healthy subscribers alone, then to everyone while
the bad origin misbehaves:

- `hang`: it reads requests and never answers (until its lane's circuit opens, the
  requests wait out the read timeout);
- `throttle`: it takes `--throttle-rate` pushes a second and answers 429 with
  `Retry-After: 1` beyond that;
- `slow`: it answers every push, but only after `--slow-ms` (a push service that is
  overloaded for minutes yet never times out).

It prints the healthy origin's time alone and beside the bad one (the goal: within 3× of
alone, or alone + 3 s, whichever is larger), and what became of the bad origin's
subscribers: all delivered once and the 429s drawn per push (throttle), or how many wait
for a delayed retry once its circuit is open (hang).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks.fanout import SIM_CPU, BenchmarkError, Deployment, cpu_model
from benchmarks.pushsim.client import PushSimulator, terminate

GOAL_FACTOR, GOAL_SLACK_S = 3.0, 3.0
HEALTHY, BAD = 0, 1


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="storypush bench --bad-origin", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bad-origin", choices=("hang", "throttle", "slow"), required=True)
    parser.add_argument("--subscribers", type=int, default=6000, help="N over both origins (default 6000)")
    parser.add_argument("--latency-ms", type=float, default=40.0, help="the healthy origin's answer delay (40)")
    parser.add_argument("--throttle-rate", type=int, default=50, help="pushes/s the throttling origin takes (50)")
    parser.add_argument("--slow-ms", type=float, default=5000.0, help="the slow origin's answer delay (5000)")
    parser.add_argument("--in-flight", type=int, default=2000, help="STORYPUSH_MAX_IN_FLIGHT (default 2000)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--verify", default="sample:50", help="simulator decryption (default sample:50)")
    args = parser.parse_args(argv)
    if args.subscribers < 12 or args.throttle_rate < 1:
        parser.error("--subscribers must be at least 12 and --throttle-rate positive")
    return args


def interleaved(healthy: list[dict[str, Any]], bad: list[dict[str, Any]]) -> list[tuple[dict[str, Any], bool]]:
    """(subscription, is it on the bad origin) in id order: one bad after every few healthy."""
    step = max(1, len(healthy) // max(1, len(bad)))
    order: list[tuple[dict[str, Any], bool]] = []
    for i, subscription in enumerate(bad):
        order += [(h, False) for h in healthy[i * step : (i + 1) * step]] + [(subscription, True)]
    return order + [(h, False) for h in healthy[len(bad) * step :]]


class Run:
    """The deployment, the simulator and one long-running worker."""

    def __init__(self, args: argparse.Namespace, stack: ExitStack):
        self.args = args
        workdir = Path(tempfile.mkdtemp(prefix="storypush-bench-bad-"))
        stack.callback(shutil.rmtree, workdir, True)
        self.sim = stack.enter_context(
            PushSimulator(origins=2, latency_ms=args.latency_ms, cpu=SIM_CPU, verify=args.verify)
        )
        self.deployment = Deployment(workdir, self.sim, args.batch_size, args.in_flight)
        stack.callback(self.deployment.close)
        n_bad = args.subscribers // 6
        key = self.deployment.key.public_bytes
        self.healthy = self.sim.mint(args.subscribers - n_bad, key, origin=HEALTHY)
        self.bad = self.sim.mint(n_bad, key, origin=BAD)
        for subscription, on_bad in interleaved(self.healthy, self.bad):
            topics = ("animals",) if on_bad else ("animals", "sport")
            self.deployment.store_subscriptions([subscription], topics)
        self.worker, self.log_path = self.deployment.start_worker("bad-origin", burst=False)
        stack.callback(terminate, self.worker, 15)

    def wait(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.worker.poll() is not None:
                raise BenchmarkError(f"the worker exited:\n{self.log_path.read_text(errors='replace')[-3000:]}")
            if time.monotonic() > deadline:
                raise BenchmarkError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.05)

    def healthy_time(self, campaign_id: str, story_id: str) -> float:
        """Seconds from the campaign's start to the healthy origin's last push of the story."""
        from workers.message import topic_header

        topic = topic_header(story_id)
        self.wait(
            lambda: sum(1 for m in self.sim.messages(origin=HEALTHY) if m.topic == topic) >= len(self.healthy),
            300,
            "every healthy push",
        )
        started = self.deployment.store.campaigns.get(campaign_id)["started_at"]
        return max(m.received_at for m in self.sim.messages(origin=HEALTHY) if m.topic == topic) - started


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    with ExitStack() as stack:
        try:
            run = Run(args, stack)
            print(f"{len(run.healthy):,} healthy + {len(run.bad):,} bad subscribers; warm-up ...", file=sys.stderr)
            # Unmeasured: both measured campaigns then find the worker's connections open.
            run.healthy_time(run.deployment.publish("bench-warm-up", ("sport",)), "bench-warm-up")
            print("alone ...", file=sys.stderr)
            alone = run.healthy_time(run.deployment.publish("bench-alone", ("sport",)), "bench-alone")
            if args.bad_origin == "hang":
                run.sim.hang(BAD)
            elif args.bad_origin == "slow":
                run.sim.set_latency(args.slow_ms, origin=BAD)
            else:
                run.sim.rate_limit(BAD, args.throttle_rate, retry_after="1")
            print(f"beside the {args.bad_origin} origin ...", file=sys.stderr)
            campaign = run.deployment.publish("bench-beside")
            beside = run.healthy_time(campaign, "bench-beside")
            lines = report_bad_origin(run, campaign)
        except BenchmarkError as exc:
            print(f"storypush bench --bad-origin: FAILED: {exc}", file=sys.stderr)
            return 1
    goal = max(GOAL_FACTOR * alone, alone + GOAL_SLACK_S)
    print(
        f"storypush bench --bad-origin {args.bad_origin}: {len(run.healthy):,} healthy + {len(run.bad):,} bad "
        f"subscribers, healthy latency {args.latency_ms:g} ms; CPU: {cpu_model()}"
    )
    print(f"healthy origin alone:         {alone:8.2f} s")
    print(
        f"healthy origin beside it:     {beside:8.2f} s  ({beside / alone:.2f}× alone; goal ≤ {goal:.2f} s: "
        f"{'met' if beside <= goal else 'MISSED'})"
    )
    print("\n".join(lines))
    return 0


def report_bad_origin(run: Run, campaign_id: str) -> list[str]:
    """What became of the bad origin's subscribers."""
    campaigns, bad = run.deployment.store.campaigns, len(run.bad)
    if run.args.bad_origin in ("throttle", "slow"):
        run.wait(
            lambda: campaigns.get(campaign_id)["state"] == "done", 600, f"the {run.args.bad_origin} origin's pushes"
        )
        state = campaigns.get(campaign_id)
        received = Counter(m.token for m in run.sim.messages(origin=BAD))
        once = sum(1 for s in run.bad if received[s["endpoint"].rsplit("/", 1)[1]] == 1)
        took = state["finished_at"] - state["started_at"]
        if run.args.bad_origin == "slow":
            return [
                f"slow origin ({run.args.slow_ms:g} ms an answer): {once:,} of {bad:,} subscribers got it exactly "
                f"once in {took:.1f} s; failed {state['failed']}"
            ]
        throttled = run.sim.stats(origin=BAD)["throttled"]
        return [
            f"throttling origin: {once:,} of {bad:,} subscribers got it exactly once in {took:.1f} s "
            f"(it takes {run.args.throttle_rate}/s after a first burst of as many: "
            f"{max(0, bad - run.args.throttle_rate) / run.args.throttle_rate:.1f} s at best); "
            f"{throttled:,} × 429 drawn, {throttled / bad:.2f} per push; failed {state['failed']}"
        ]
    metrics, bad_origin = run.deployment.store.metrics, run.sim.authorities[BAD]

    def lane() -> dict[str, Any]:
        return next((row for row in metrics.lane_rows() if row["origin"] == bad_origin), {})

    run.wait(lambda: lane().get("state") == "circuit_open", 120, "the hanging origin's circuit to open")
    opened = time.time() - campaigns.get(campaign_id)["started_at"]  # within a second (lane reports)
    lane_row = lane()
    run.wait(lambda: campaigns.get(campaign_id)["retrying"] >= bad, 60, "its pushes to go to a delayed retry")
    state = campaigns.get(campaign_id)
    return [
        f"hanging origin: its lane's circuit was open {opened:.1f} s into the campaign, after "
        f"{lane_row.get('unreachable', 0)} requests timed out (10 s read timeout); {state['retrying']:,} of "
        f"{bad:,} pushes then waited for a delayed retry (a probe reopens the lane), {state['failed']} failed"
    ]

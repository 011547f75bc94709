"""A batch job's work on the worker's event loop: its batch, the batches it takes on, and
the writes of their outcomes.

While some origin's lane would run short of pushes, the job takes on the campaign's next
batch (`take_range`), so connections never idle between batches and a lane that hangs or
is throttled never holds back the others: only lanes that are sending ask for more. The
`OutcomeWriter` writes resolved marks and counters as answers arrive and reads the
campaign's state with each write, so a cancel stops every batch of the campaign within
one write (at most `TICK` when idle). Everything that may lag a second (metrics, deleted
subscriptions, lane reports, lease renewals) is written once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict

from service.store.campaign_store import CampaignState
from service.store.outcome_store import OutcomeStore, OutcomeWrite

from .batch import LEASE_TTL, BatchRun, Stop, Unit, write_upkeep
from .ledger import Upkeep
from .queueing import BATCH_DEADLINE, unit_id
from .runtime import Runtime

logger = logging.getLogger(__name__)

# How often an idle job looks at the campaign's state and its lanes.
TICK = 0.05
UPKEEP_INTERVAL = 1.0
LOOK_INTERVAL = 0.005
# Take on the campaign's next batches while lanes would run dry (tests turn it off).
RUN_AHEAD = True


def worker_name() -> str:
    """This process in lane reports (read when reporting: a worker pool forks its workers)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class OutcomeWriter:
    """Group commit of outcomes: one write in flight at a time, carrying everything that
    came in since the previous one; `flush` returns once all recorded so far is written."""

    def __init__(self, store: OutcomeStore, runs: list[BatchRun], on_state: Callable[[str, str], None]):
        self.store = store
        self.runs = runs  # the dispatcher's list: runs it takes on later are written too
        self.on_state = on_state
        self._wanted = asyncio.Event()
        self._lock = asyncio.Lock()
        self._closed = False

    def poke(self) -> None:
        self._wanted.set()

    async def run(self) -> None:
        while not self._closed:
            await self._wanted.wait()
            self._wanted.clear()
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            runs = self.runs
            writes = []
            for run in runs:
                marks = run.ledger.take_marks()
                if marks:
                    writes.append(OutcomeWrite(run.campaign_id, marks.resolved, marks.counts, marks.errors))
            watched = sorted({run.campaign_id for run in runs})
            if not writes and not watched:
                return
            states = await self.store.write(writes, watched)
        for campaign_id, state in states.items():
            if state != CampaignState.SENDING:
                self.on_state(campaign_id, state or "missing")

    async def close(self) -> None:
        self._closed = True
        self._wanted.set()
        await self.flush()


class Dispatch:
    """The runs of one `send_batch` job, started together on the worker's loop."""

    def __init__(self, rt: Runtime):
        self.rt = rt
        self.runs: list[BatchRun] = []
        self.finishing: list[asyncio.Task[None]] = []
        self.started = time.monotonic()
        self.wake = asyncio.Event()
        self.writer = OutcomeWriter(rt.outcomes, self.runs, self._state_changed)
        self._no_more_ranges: set[str] = set()

    def unit(self, unit: Unit, token: str) -> BatchRun:
        return BatchRun(self.rt, unit, token, self.writer)

    async def run(self, first: BatchRun) -> None:
        """Send `first` (and whatever batches are taken on) until all are finished."""
        sender = self.rt.sender
        sender.lanes.on_hungry = self.wake.set
        writer = asyncio.ensure_future(self.writer.run())
        try:
            self._start(first)
            last_upkeep = time.monotonic()
            while any(not task.done() for task in self.finishing):
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), TICK)
                self.writer.poke()  # reads the campaign's state even when nothing was answered
                elapsed = time.monotonic() - self.started
                if elapsed > BATCH_DEADLINE:
                    for run in self.runs:
                        run.stop(Stop.DEADLINE)
                elif RUN_AHEAD and elapsed < BATCH_DEADLINE / 2 and sender.wants_work():
                    self._take_ahead(first.campaign_id)
                if time.monotonic() - last_upkeep >= UPKEEP_INTERVAL:
                    self._upkeep()
                    last_upkeep = time.monotonic()
                await asyncio.sleep(LOOK_INTERVAL)  # a lane's every answer may wake us: look at most this often
            await self.writer.close()
            self._upkeep()
        finally:
            sender.lanes.on_hungry = None
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    def _start(self, run: BatchRun) -> None:
        self.runs.append(run)
        run.start()

        async def lifecycle() -> None:
            await run.all_settled.wait()
            await run.finish()

        self.finishing.append(asyncio.ensure_future(lifecycle()))

    def _take_ahead(self, campaign_id: str) -> None:
        """Lease the campaign's next batch while a lane would run short of pushes. That
        batch's own RQ job later finds it finished (or leased: RQ's Retry runs it again)."""
        if campaign_id in self._no_more_ranges:
            return
        campaigns = self.rt.store.campaigns
        for _ in range(3):
            taken = campaigns.take_range(campaign_id)
            if taken is None:
                self._no_more_ranges.add(campaign_id)
                return
            start, end = taken
            token = uuid.uuid4().hex
            unit = unit_id(start, 1)
            if not campaigns.unit_finished(campaign_id, unit) and campaigns.acquire_lease(
                campaign_id, unit, token, LEASE_TTL
            ):
                self._start(self.unit(Unit(campaign_id, start, end), token))
                return

    def _state_changed(self, campaign_id: str, state: str) -> None:
        """The campaign left `sending` (cancelled, failed or done elsewhere): stop its runs."""
        for run in self.runs:
            if run.campaign_id == campaign_id and run.stopped is None:
                logger.info(
                    "campaign %s is %s: batch %s stops",
                    campaign_id,
                    state,
                    run.unit.id_,
                    extra={"campaign_id": campaign_id, "state": state},
                )
                run.stop(Stop.CANCELLED)
        self._no_more_ranges.add(campaign_id)

    def _upkeep(self) -> None:
        """Once a second: what may lag (metrics, deletions, lane report) and the leases.
        The runs' upkeep is written together: they are batches of one campaign."""
        upkeep = Upkeep()
        for run in self.runs:
            if not run.released:
                upkeep.merge(run.ledger.take_upkeep())
                run.renew_lease()
        if self.runs:
            write_upkeep(self.rt, self.runs[0].campaign_id, upkeep)
        lanes = self.rt.sender.lanes
        metrics = self.rt.store.metrics
        metrics.record_lane_events(lanes.take_events())
        metrics.report_lanes(worker_name(), [asdict(snapshot) for snapshot in lanes.snapshots()])

    def release(self) -> None:
        for run in self.runs:
            run.release()

    def summaries(self) -> list[dict]:
        return [run.summary() for run in self.runs]

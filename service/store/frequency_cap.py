"""Counters behind the per-subscriber daily frequency cap (see `service.targeting`).

One Redis string per calendar day holds an 8-bit counter per subscription id
(`BITFIELD ... OVERFLOW SAT INCRBY u8 #id 1`): a byte per subscriber and day
instead of a key each, and one command per day touched per batch. The day is the
subscriber's own, so a batch spanning time zones touches up to three keys; each
lives three days, long enough for the widest zone offsets.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date

import redis

from . import keys

KEEP_SECONDS = 3 * 86400


class FrequencyCapStore:
    def __init__(self, client: redis.Redis):
        self.client = client

    def take(self, pushes: Sequence[tuple[int, date]], cap: int) -> list[bool]:
        """Count one push for each (subscription id, its local day); True where that push
        is still within `cap` for the day, False where the subscriber already had `cap`.

        Counting happens before sending, so a push that later fails still counts: the
        cap bounds how often a reader is interrupted, and a failed push may well have
        reached them.
        """
        by_day: dict[date, list[int]] = defaultdict(list)
        for position, (_, day) in enumerate(pushes):
            by_day[day].append(position)
        pipe = self.client.pipeline(transaction=False)
        for day, positions in by_day.items():
            field = pipe.bitfield(keys.frequency_cap(day)).overflow("SAT")
            for position in positions:
                field.incrby("u8", f"#{pushes[position][0]}", 1)
            field.execute()
            pipe.expire(keys.frequency_cap(day), KEEP_SECONDS)
        replies = pipe.execute()
        allowed = [False] * len(pushes)
        for (_, positions), counts in zip(by_day.items(), replies[::2], strict=True):
            for position, count in zip(positions, counts, strict=True):
                allowed[position] = count <= cap
        return allowed

    def count(self, id_: int, day: date) -> int:
        """Pushes counted for one subscriber on `day` (for tests and operators)."""
        return int(self.client.bitfield(keys.frequency_cap(day)).get("u8", f"#{id_}").execute()[0])

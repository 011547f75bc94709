"""Per-subscriber delivery rules: quiet hours and a daily frequency cap, both in the
subscriber's own time zone (the one their browser reported when subscribing).

Plain Python with no Redis or Flask, so the rules are tested on their own; the
counting behind the cap lives in `store.frequency_cap`, the applying in the batch job.

Why skip rather than hold back: a story push is news with a TTL of hours (4 h by
default). Holding every reader in their night until morning would deliver a
stale story hours late; a reader in quiet hours simply does not get this one,
and the campaign counts them as skipped with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import SettingsError

# The Redis counters behind the cap are one byte per subscriber and day, saturating at
# 255, so any cap up to this stays exact however many stories a day brings.
MAX_FREQUENCY_CAP = 100
QUIET_HOURS = "quiet_hours"
FREQUENCY_CAP = "frequency_cap"

_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class QuietHours:
    """A daily window of local time, in minutes after midnight; it may wrap past midnight."""

    start: int
    end: int

    def contains(self, local: datetime) -> bool:
        minute = local.hour * 60 + local.minute
        if self.start <= self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end  # e.g. 22:00-07:00

    def __str__(self) -> str:
        return f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"


def parse_quiet_hours(raw: str | None, variable: str = "STORYPUSH_QUIET_HOURS") -> QuietHours | None:
    """`HH:MM-HH:MM` (start inclusive, end exclusive) or empty for none.

    Raises:
        SettingsError: the value is not two clock times, or they are equal.
    """
    if raw is None or not raw.strip():
        return None
    parts = [part.strip() for part in raw.split("-")]
    matches = [_CLOCK.match(part) for part in parts]
    if len(parts) != 2 or not all(matches):
        raise SettingsError(variable, f"must be HH:MM-HH:MM in the subscriber's local time, got {raw!r}")
    start, end = (int(m.group(1)) * 60 + int(m.group(2)) for m in matches if m)
    if start == end:
        raise SettingsError(variable, f"must not start and end at the same time, got {raw!r}")
    return QuietHours(start, end)


@lru_cache(maxsize=1024)
def _zone(name: str | None) -> tzinfo:
    """The subscriber's zone; UTC when they reported none (or one this machine lacks)."""
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


@dataclass(frozen=True)
class Targeting:
    """The deployment's rules. `frequency_cap` 0 and `quiet_hours` None mean no rule."""

    frequency_cap: int = 0
    quiet_hours: QuietHours | None = None

    @property
    def active(self) -> bool:
        return bool(self.frequency_cap or self.quiet_hours)

    def local_time(self, timezone: str | None, now: float) -> datetime:
        return datetime.fromtimestamp(now, _zone(timezone))

    def quiet(self, local: datetime) -> bool:
        return self.quiet_hours is not None and self.quiet_hours.contains(local)

    @staticmethod
    def cap_day(local: datetime) -> date:
        """The subscriber's calendar day, which their cap counts within."""
        return local.date()

"""The `Retry-After` header (RFC 9110 §10.2.3), as both our HTTP clients read it: the push
sender (a throttling push service) and the feed fetcher (a throttling feed server).

Hand-written because it is a few lines and the header is hostile input: only ASCII
delay-seconds or an HTTP date count (`"²".isdigit()` is True, and `float` refuses it), and
the wait is capped, since 400 digits make `float` return infinity.
"""

from __future__ import annotations

import email.utils

# The longest wait a server can ask for: WNS blocks a sender for "an hour to a day".
MAX_RETRY_AFTER = 86400.0


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from `now` to wait, at most `MAX_RETRY_AFTER`; None for a missing or
    unusable value (the caller then picks its own back-off)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER)

"""How story text is cut to fit the push payload (CONTRACT.md: cut, never refused).

The webhook cuts a story's title and body on arrival to what a push could ever
carry, so a CMS that sends a whole article still gets its story out and Redis
never stores more than that; `workers.message` then cuts them to fit the
message exactly. Both use these rules, so both cut the same way.
"""

from __future__ import annotations

from collections.abc import Callable

# UTF-8 JSON of at most this many bytes before encryption (Firefox for Android's relay limit).
MAX_PAYLOAD_BYTES = 2600
ELLIPSIS = "…"


def cut(text: str, fits: Callable[[str], bool]) -> str:
    """The longest prefix of `text` plus an ellipsis for which `fits` holds ("" if none does)."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if fits(text[:middle] + ELLIPSIS):
            low = middle
        else:
            high = middle - 1
    return text[:low] + ELLIPSIS if low else ""


def cut_to_bytes(text: str, limit: int = MAX_PAYLOAD_BYTES) -> str:
    """`text` if its UTF-8 form has at most `limit` bytes, else its longest prefix that,
    with an ellipsis, does (cut on a character boundary)."""
    data = text.encode()
    if len(data) <= limit:
        return text
    room = limit - len(ELLIPSIS.encode())
    return data[:room].decode("utf-8", "ignore") + ELLIPSIS

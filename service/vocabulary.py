"""The fixed words of storypush's interfaces, each defined once.

Request validation (and with it the OpenAPI document), the store, the CLI and the workers
all take them from here. Campaign states live with their state machine
(`store.campaign_store.CampaignState`).
"""

from __future__ import annotations

from enum import StrEnum


class PromptEventType(StrEnum):
    """Steps of the soft-prompt funnel `prompt.js` reports, in funnel order."""

    SHOWN = "shown"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    DENIED = "denied"


class ReceiptType(StrEnum):
    """What `sw.js` reports about a notification; each is also a campaign counter."""

    DELIVERED = "delivered"
    CLICKED = "clicked"
    DISMISSED = "dismissed"


class Urgency(StrEnum):
    """The Web Push `Urgency` header's values (RFC 8030, section 5.3)."""

    VERY_LOW = "very-low"
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


DEFAULT_URGENCY = Urgency.NORMAL
# How long a push service keeps an undelivered story (the `TTL` header): a story is news
# for hours, not days.
DEFAULT_TTL = 4 * 3600

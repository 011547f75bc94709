"""One typed settings object, read once from the environment.

Every process (web, worker, CLI) builds its configuration here, so a bad value
fails at start-up with a message naming the variable, never mid-send.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from .endpoints import InvalidEndpoint, check_host_entry
from .errors import SettingsError
from .targeting import MAX_FREQUENCY_CAP, Targeting, parse_quiet_hours
from .topics import Topic, parse_topics

DEV_VAPID_SUBJECT = "mailto:dev@example.com"

# Domains that can never receive mail or be a contact: Apple answers 403 to them.
_NOT_REAL_DOMAINS = ("localhost", "local", "localdomain", "invalid", "test", "example.invalid")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(name, f"must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(name, f"must be at least {minimum}, got {value}")
    return value


def _bounded(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    value = _int(env, name, default, minimum)
    if value > maximum:
        raise SettingsError(name, f"must be at most {maximum}, got {value}")
    return value


def _csv(raw: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (raw or "").split(",") if part.strip())


def check_vapid_subject(subject: str) -> str | None:
    """Return why `subject` is unusable as a VAPID `sub` claim, or None if it is fine.

    Push services (Apple's in particular) refuse a contact without a real domain.
    """
    if subject.startswith("mailto:"):
        _, _, domain = subject[len("mailto:") :].rpartition("@")
        domain = domain.strip().lower().rstrip(".")
    elif subject.startswith("https://"):
        domain = (urlsplit(subject).hostname or "").lower()
    else:
        return "must start with mailto: or https://"
    if not domain or "." not in domain:
        return f"has no real domain ({domain or 'empty'})"
    if domain in _NOT_REAL_DOMAINS or domain.rsplit(".", 1)[-1] in _NOT_REAL_DOMAINS:
        return f"has no real domain ({domain})"
    try:
        ipaddress.ip_address(domain)
    except ValueError:
        return None
    return f"has an IP address, not a domain ({domain})"


def _check_host(variable: str, entry: str) -> str:
    """One `host[:port]` entry of a host list, by the endpoint parser's rules, lower-cased."""
    try:
        return check_host_entry(entry)
    except InvalidEndpoint as exc:
        raise SettingsError(variable, f"has a bad entry {entry!r}: {exc}") from None


def _check_webhook_secret(raw: str | None) -> str | None:
    if not raw:
        return None
    body = raw.removeprefix("whsec_")
    try:
        decoded = base64.b64decode(body + "==", validate=False)
    except ValueError:
        raise SettingsError("STORYPUSH_WEBHOOK_SECRET", "is not whsec_<base64>") from None
    if len(decoded) < 16:
        raise SettingsError("STORYPUSH_WEBHOOK_SECRET", "must decode to at least 16 bytes")
    return raw


@dataclass(frozen=True)
class FeedSettings:
    """How publishers' feeds are fetched and which of their entries may go out."""

    # host[:port] entries trusted over plain http and on private addresses (an intranet
    # CMS, a test server on 127.0.0.1); every other feed is https on a public address.
    trusted_hosts: tuple[str, ...] = ()
    # An entry published (or updated) longer ago than this is recorded, never sent.
    max_age: int = 86400
    # Bytes of (decompressed) body read before the fetch counts as failed.
    max_bytes: int = 5 * 1024 * 1024
    # Seconds one fetch may take, redirects and body included.
    timeout: int = 10


@dataclass(frozen=True)
class Settings:
    """Everything configurable, checked when built (like rq's `Retry`)."""

    redis_url: str | None = None
    store_url: str | None = None
    data_dir: Path = Path("var")
    vapid_private_key: str | None = None
    vapid_subject: str | None = None
    webhook_secret: str | None = None
    admin_token: str | None = None
    metrics_token: str | None = None
    allowed_origins: tuple[str, ...] = ()
    push_hosts: tuple[str, ...] = ()
    # Writes per client (IPv4 address or IPv6 /64) per minute on the browser API.
    rate_limit_per_minute: int = 60
    # New subscriptions per minute across all clients (0: no ceiling); see README "Security".
    new_subscriptions_per_minute: int = 6000
    # Trust this many reverse proxies' X-Forwarded-For when identifying a client.
    trusted_proxies: int = 0
    batch_size: int = 500
    # All lanes together (a safety ceiling: each origin's lane adapts its own limit below it).
    max_in_flight: int = 2000
    max_attempts: int = 5
    queue_name: str = "storypush"
    topics: tuple[Topic, ...] = field(default_factory=lambda: parse_topics(None))
    targeting: Targeting = field(default_factory=Targeting)
    feeds: FeedSettings = field(default_factory=FeedSettings)

    def require_production(self) -> None:
        """Refuse to run `web`/`worker` with a configuration push services would reject."""
        if not self.vapid_subject:
            raise SettingsError("STORYPUSH_VAPID_SUBJECT", "is required (mailto:you@your-domain or https://...)")
        problem = check_vapid_subject(self.vapid_subject)
        if problem:
            raise SettingsError("STORYPUSH_VAPID_SUBJECT", problem)

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the environment once into a `Settings`.

    Raises:
        SettingsError: naming the variable whose value is unusable.
    """
    env = os.environ if env is None else env
    subject = env.get("STORYPUSH_VAPID_SUBJECT") or None
    if subject and not subject.startswith(("mailto:", "https://")):
        raise SettingsError("STORYPUSH_VAPID_SUBJECT", "must start with mailto: or https://")
    settings = Settings(
        redis_url=env.get("REDIS_URL") or None,
        store_url=env.get("STORYPUSH_STORE_URL") or None,
        data_dir=Path(env.get("STORYPUSH_DATA_DIR") or "var").resolve(),
        vapid_private_key=env.get("STORYPUSH_VAPID_PRIVATE_KEY") or None,
        vapid_subject=subject,
        webhook_secret=_check_webhook_secret(env.get("STORYPUSH_WEBHOOK_SECRET")),
        admin_token=env.get("STORYPUSH_ADMIN_TOKEN") or None,
        metrics_token=env.get("STORYPUSH_METRICS_TOKEN") or None,
        allowed_origins=tuple(o.rstrip("/") for o in _csv(env.get("STORYPUSH_ALLOWED_ORIGINS"))),
        push_hosts=tuple(_check_host("STORYPUSH_PUSH_HOSTS", h) for h in _csv(env.get("STORYPUSH_PUSH_HOSTS"))),
        rate_limit_per_minute=_int(env, "STORYPUSH_RATE_LIMIT", 60),
        new_subscriptions_per_minute=_int(env, "STORYPUSH_NEW_SUBSCRIPTIONS_PER_MINUTE", 6000, minimum=0),
        trusted_proxies=_int(env, "STORYPUSH_TRUSTED_PROXIES", 0, minimum=0),
        batch_size=_int(env, "STORYPUSH_BATCH_SIZE", 500),
        max_in_flight=_int(env, "STORYPUSH_MAX_IN_FLIGHT", 2000),
        max_attempts=_int(env, "STORYPUSH_MAX_ATTEMPTS", 5),
        queue_name=env.get("STORYPUSH_QUEUE") or "storypush",
        topics=parse_topics(env.get("STORYPUSH_TOPICS")),
        targeting=Targeting(
            frequency_cap=_int(env, "STORYPUSH_FREQUENCY_CAP", 0, minimum=0),
            quiet_hours=parse_quiet_hours(env.get("STORYPUSH_QUIET_HOURS")),
        ),
        feeds=FeedSettings(
            trusted_hosts=tuple(_check_host("STORYPUSH_FEED_HOSTS", h) for h in _csv(env.get("STORYPUSH_FEED_HOSTS"))),
            max_age=_bounded(env, "STORYPUSH_FEED_MAX_AGE", 86400, 60, 30 * 86400),
            max_bytes=_bounded(env, "STORYPUSH_FEED_MAX_BYTES", 5 * 1024 * 1024, 1024, 100 * 1024 * 1024),
            timeout=_bounded(env, "STORYPUSH_FEED_TIMEOUT", 10, 1, 120),
        ),
    )
    if settings.targeting.frequency_cap > MAX_FREQUENCY_CAP:
        raise SettingsError("STORYPUSH_FREQUENCY_CAP", f"must be at most {MAX_FREQUENCY_CAP} (0 for no cap)")
    tokens = {"STORYPUSH_ADMIN_TOKEN": settings.admin_token, "STORYPUSH_METRICS_TOKEN": settings.metrics_token}
    for name, token in tokens.items():
        if token is not None and len(token) < 16:
            raise SettingsError(name, "must be at least 16 characters")
    return settings

"""Push endpoints: the one parser that turns an endpoint URL into where a push goes.

A push endpoint is a capability URL that a browser hands out and a stranger can
send us, so what it names is decided once, here, for both sides: the API
validator refuses what `parse_endpoint` refuses, and the sender connects to the
`host` and `port` it returns and writes its `path` in the request line. Two
parsers (say `urlsplit` in the validator and a string split in the sender) would
disagree on some input, and the sender would then connect somewhere the
validator never approved.

Why by hand rather than `urllib.parse` or a URL library: the rules are narrower
than any URL grammar (one scheme, one port, a short allow-list of hosts) and
every lenient corner of a general parser (userinfo, backslashes, percent-escapes,
IDN, trailing dots, bracketed or numeric hosts) is exactly what must be refused;
and the sender calls this for every push, so it has to cost microseconds.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

# Real endpoints are 150-500 characters; anything far longer is not one.
MAX_ENDPOINT_LENGTH = 1024
DEFAULT_PORT = 443

# The real push services browsers hand out endpoints for, by the label `/metrics` and logs use.
EXACT_HOSTS = {"fcm.googleapis.com": "fcm", "updates.push.services.mozilla.com": "mozilla"}
# Apple's guidance is to allow any host under push.apple.com (today web.push.apple.com).
APPLE_SUFFIX = ".push.apple.com"
# WNS hands out <one label>.notify.windows.com, e.g. wns2-by3p.notify.windows.com.
WNS_SUFFIX = ".notify.windows.com"

_SCHEME = "https://"
# Whitespace, control characters, backslashes (some parsers read them as "/") and fragments.
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\\#]")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_PORT = re.compile(r"[1-9][0-9]{0,4}")
_MAX_HOSTNAME = 253


class InvalidEndpoint(ValueError):
    """Why an endpoint is refused; `.reason` is a short machine code, str(exc) a human message."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PushEndpoint:
    """Where one push goes, as derived from its endpoint URL."""

    host: str  # lowercase ASCII host as connected to and as named in TLS SNI
    port: int  # 443 unless a STORYPUSH_PUSH_HOSTS entry names another port
    path: str  # path plus "?query" if any, exactly as written in the request line
    label: str  # the allow-list entry that matched: fcm, mozilla, apple, wns, or the configured entry

    @property
    def authority(self) -> str:
        """`host` or `host:port` (port omitted when 443): the Host header."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORT else f"{host}:{self.port}"

    @property
    def origin(self) -> str:
        """`https://` + authority: the VAPID `aud` and the per-origin lane key."""
        return _SCHEME + self.authority


def parse_endpoint(url: str, extra_hosts: Iterable[str] = ()) -> PushEndpoint:
    """Where a push to `url` goes, or why it may not go there.

    The only function that derives (host, port, path) from an endpoint: the API
    validator and the sender both call it. Rules: exactly the lowercase prefix
    `https://`, at most 1,024 ASCII characters, no whitespace, control
    characters, backslashes or `#`; an authority without `@` or `%`; a host that is
    `fcm.googleapis.com` or `updates.push.services.mozilla.com`, a host under
    `push.apple.com`, or `<one label>.notify.windows.com` (labels of letters,
    digits and hyphens, at most 63 characters, no `xn--` IDN labels, no trailing
    dot), on port 443; or exactly one of `extra_hosts` (STORYPUSH_PUSH_HOSTS
    entries, the only way to allow an IP address, a private host or another port).
    The host is compared and returned in lowercase; the path is kept as written.

    Cost (timeit, Python 3.11, a shared 2-core AMD EPYC): 1.7-2.3 µs for a typical
    183-character FCM endpoint, 2.2-3.0 µs for web.push.apple.com, 2.9-3.6 µs for a
    323-character WNS one; the push's encryption costs ~180 µs.

    Raises:
        InvalidEndpoint: `.reason` says which rule refused it.
    """
    if not isinstance(url, str):
        raise InvalidEndpoint("not_text", "must be a string")
    if len(url) > MAX_ENDPOINT_LENGTH:
        raise InvalidEndpoint("too_long", f"is longer than {MAX_ENDPOINT_LENGTH} characters")
    if not url.startswith(_SCHEME):
        raise InvalidEndpoint("scheme", "must start with https:// (lowercase)")
    if not url.isascii():
        raise InvalidEndpoint("non_ascii", "must be ASCII (no IDN or other non-ASCII characters)")
    forbidden = _FORBIDDEN.search(url)
    if forbidden:
        raise _forbidden_character(forbidden.group())
    end = _authority_end(url)
    host, port = split_authority(url[len(_SCHEME) : end])
    path = url[end:]
    if not path or path[0] == "?":
        path = "/" + path
    label = _builtin_label(host) if port == DEFAULT_PORT else None
    if label is None:
        label = _extra_table(tuple(extra_hosts)).get((host, port)) if extra_hosts else None
        if label is None:
            raise _not_allowed(host, port)
    return PushEndpoint(host, port, path, label)


def split_authority(authority: str) -> tuple[str, int]:
    """(lowercase host, port) of `host`, `host:port`, `[ipv6]` or `[ipv6]:port`; also
    reads STORYPUSH_PUSH_HOSTS entries, so an entry and an endpoint match exactly.

    Raises:
        InvalidEndpoint: no host, userinfo, percent-escapes, a bad port.
    """
    if not authority:
        raise InvalidEndpoint("no_host", "has no host")
    if "@" in authority:
        raise InvalidEndpoint("userinfo", "must not contain credentials (@)")
    if "%" in authority:
        raise InvalidEndpoint("percent", "must not contain percent-escapes in the host")
    if authority[0] == "[":
        host, bracket, rest = authority[1:].partition("]")
        if not bracket or (rest and rest[0] != ":"):
            raise InvalidEndpoint("bad_host", "has an unclosed or malformed [IPv6] host")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidEndpoint("bad_host", "has a malformed [IPv6] host") from None
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text = authority.partition(":")
        if not colon:
            port_text = None
        if not host:
            raise InvalidEndpoint("no_host", "has no host")
    if port_text is None:
        return host.lower(), DEFAULT_PORT
    if not _PORT.fullmatch(port_text) or int(port_text) > 65535:
        raise InvalidEndpoint("bad_port", "has a malformed port")
    return host.lower(), int(port_text)


def _authority_end(url: str) -> int:
    """Index of the first "/" or "?" after the scheme (the end of the authority)."""
    slash = url.find("/", len(_SCHEME))
    query = url.find("?", len(_SCHEME), slash if slash >= 0 else len(url))
    if query >= 0:
        return query
    return slash if slash >= 0 else len(url)


def _builtin_label(host: str) -> str | None:
    """Which real push service `host` belongs to (on port 443), or None."""
    label = EXACT_HOSTS.get(host)
    if label is not None:
        return label
    if host.endswith(APPLE_SUFFIX) and _is_hostname(host):
        return "apple"
    if host.endswith(WNS_SUFFIX) and host.count(".") == WNS_SUFFIX.count(".") and _is_hostname(host):
        return "wns"
    return None


def _is_hostname(host: str) -> bool:
    """Letters, digits and hyphens in labels of 1-63 characters, no IDN (xn--) label."""
    return len(host) <= _MAX_HOSTNAME and _HOSTNAME.fullmatch(host) is not None and not _is_idn(host)


def _is_idn(host: str) -> bool:
    """An internationalised name in its ASCII (punycode) form: no real push service uses one."""
    return ".xn--" in "." + host


def _is_ip(host: str) -> bool:
    if ":" in host or host.replace(".", "").isdigit():
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _forbidden_character(char: str) -> InvalidEndpoint:
    if char == "\\":
        return InvalidEndpoint("backslash", "must not contain backslashes")
    if char == "#":
        return InvalidEndpoint("fragment", "must not have a #fragment")
    return InvalidEndpoint("control", "must not contain whitespace or control characters")


def _not_allowed(host: str, port: int) -> InvalidEndpoint:
    """The most useful of the reasons a host and port that are not allowed have."""
    if host.endswith("."):
        return InvalidEndpoint("trailing_dot", "must not end its host with a dot")
    if _is_ip(host):
        return InvalidEndpoint("ip_address", "must not be an IP address (unless listed in STORYPUSH_PUSH_HOSTS)")
    if _is_idn(host):
        return InvalidEndpoint("idn", "must not have an internationalised (xn--) host")
    if not _is_hostname(host):
        return InvalidEndpoint("bad_host", "has a malformed host (labels of letters, digits, hyphens)")
    if port != DEFAULT_PORT:
        return InvalidEndpoint("port", "must use port 443 (unless listed in STORYPUSH_PUSH_HOSTS)")
    return InvalidEndpoint("host_not_allowed", f"host {host} is not a known push service")


def check_host_entry(entry: str) -> str:
    """A STORYPUSH_PUSH_HOSTS entry (`host[:port]`, `[ipv6]:port`), lowercased.

    Raises:
        InvalidEndpoint: the entry could never match an endpoint.
    """
    if entry.count(":") > 1 and not entry.startswith("["):
        raise InvalidEndpoint("bad_host", f"{entry!r}: write an IPv6 address as [address]:port")
    host, _ = split_authority(entry)
    if not (_is_hostname(host) or _is_ip(host)):
        raise InvalidEndpoint("bad_host", f"{entry!r} is not host[:port]")
    return entry.lower()


@lru_cache(maxsize=8)
def _extra_table(entries: tuple[str, ...]) -> dict[tuple[str, int], str]:
    """{(host, port): entry} of the configured extra hosts (built once per configuration)."""
    table: dict[tuple[str, int], str] = {}
    for entry in entries:
        table.setdefault(split_authority(entry.lower()), entry.lower())
    return table

"""Push endpoints: the one function that derives (host, port, path) from an endpoint URL.

Interim version for the fan-out lanes; the hardening work replaces its rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

_BUILTIN = (
    ("fcm.googleapis.com", "fcm"),
    ("updates.push.services.mozilla.com", "mozilla"),
    ("push.apple.com", "apple"),
    ("notify.windows.com", "wns"),
)


class InvalidEndpoint(ValueError):
    """Why an endpoint is refused; `.reason` is a short machine code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PushEndpoint:
    host: str
    port: int
    path: str
    label: str

    @property
    def authority(self) -> str:
        return self.host if self.port == 443 else f"{self.host}:{self.port}"

    @property
    def origin(self) -> str:
        return "https://" + self.authority


def parse_endpoint(url: str, extra_hosts: Iterable[str] = ()) -> PushEndpoint:
    if not url.startswith("https://"):
        raise InvalidEndpoint("scheme", "must be an https:// URL")
    rest = url[8:]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, path = rest[:cut].lower(), rest[cut:]
    if not path.startswith("/"):
        path = "/" + path
    if authority in extra_hosts:
        host, _, port = authority.rpartition(":") if ":" in authority else (authority, "", "443")
        return PushEndpoint(host, int(port or 443), path, authority)
    host = authority.removesuffix(":443")
    for suffix, label in _BUILTIN:
        if host == suffix or host.endswith("." + suffix):
            return PushEndpoint(host, 443, path, label)
    raise InvalidEndpoint("host", f"host {host} is not a known push service")

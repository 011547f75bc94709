"""Fetching a publisher's feed: https to public addresses only, bounded in time and size.

The feed URL is the operator's, but the server behind it is not ours: it may redirect
anywhere, answer slowly, send gigabytes or point its DNS at our own network. So:

- A URL is http(s) without credentials. Plain http, `localhost` and private, loopback or
  link-local addresses are allowed only for the `host[:port]` entries the operator lists in
  `STORYPUSH_FEED_HOSTS` (an intranet CMS; the tests' server on 127.0.0.1).
- SSRF: every other host goes through `requests-hardened`, which resolves the name once,
  refuses private, loopback, link-local, CG-NAT and multicast addresses, and connects to
  exactly the address it checked, so DNS cannot change its answer in between.
- Redirects are followed here, at most `MAX_REDIRECTS`, each target checked like the feed URL
  itself (so a redirect to http:// or to an internal host is refused).
- Conditional GET: the feed's last `ETag` / `Last-Modified` go out as `If-None-Match` /
  `If-Modified-Since`; a 304 costs the publisher nothing.
- Connect within 5 s; the body is read with `read1` (one socket read at a time), so the
  deadline is checked between reads and a slow drip cannot hold a worker: a fetch ends
  within about `timeout` seconds (at worst twice that, when one read waits the full time).
- At most `max_bytes` of decompressed body (a gzip bomb stops at the limit too).
- Proxy variables and `.netrc` are not read (`trust_env` off): credentials never leak to a feed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import SplitResult, urljoin, urlsplit

import requests
import urllib3
from requests_hardened import Config, Manager
from requests_hardened.ip_filter import InvalidIPAddress

from .errors import FeedProblem
from .retry_after import parse_retry_after
from .settings import FeedSettings
from .validation import split_url

MAX_URL_LENGTH = 2048
MAX_REDIRECTS = 5
CONNECT_TIMEOUT = 5.0
READ_SIZE = 64 * 1024
DEFAULT_PORTS = {"http": 80, "https": 443}
USER_AGENT = "storypush-feeds/1 (self-hosted web push; polls this feed for new stories)"
ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, application/json;q=0.9, "
    "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
)


@dataclass(frozen=True)
class FeedResponse:
    """What the server answered; `status` 304 means unchanged (empty `body`)."""

    url: str
    status: int
    body: bytes
    content_type: str
    etag: str | None
    last_modified: str | None

    @property
    def not_modified(self) -> bool:
        return self.status == 304


def _authority(parts: SplitResult) -> tuple[str, int]:
    host = parts.hostname or ""
    return (f"[{host}]" if ":" in host else host), parts.port or DEFAULT_PORTS.get(parts.scheme, 0)


def _internal_address(host: str) -> bool:
    """Whether a host *as written* is this machine or an internal network (names are
    resolved and checked again at connect time)."""
    host = host.rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


class FeedUrlPolicy:
    """Which feed URLs may be fetched, for the add-a-feed check and for every redirect."""

    def __init__(self, trusted_hosts: tuple[str, ...] = ()):
        # Entries are exact host[:port]; a bare host means its scheme's default port.
        self.trusted_hosts = frozenset(h.lower() for h in trusted_hosts)

    def trusted(self, url: str) -> bool:
        parts = urlsplit(url)
        host, port = _authority(parts)
        return f"{host}:{port}" in self.trusted_hosts or (
            host in self.trusted_hosts and port == DEFAULT_PORTS.get(parts.scheme)
        )

    def problem(self, url: str) -> str | None:
        """Why `url` may not be fetched, or None if it may."""
        try:
            parts = split_url(url, MAX_URL_LENGTH)
        except ValueError as problem:
            return str(problem)
        if parts.scheme not in DEFAULT_PORTS:
            return "must be an https:// URL"
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            return "must not contain credentials"
        if not parts.hostname:
            return "has no host"
        if self.trusted(url):
            return None
        host = _authority(parts)[0]
        if parts.scheme != "https":
            return f"must be https:// (plain http only for hosts listed in STORYPUSH_FEED_HOSTS, e.g. {host})"
        if _internal_address(host):
            return f"points at a private or loopback address (allow {host} in STORYPUSH_FEED_HOSTS if intended)"
        return None


class FeedFetcher:
    """One fetch at a time per instance; sessions live for one `fetch` call."""

    def __init__(self, settings: FeedSettings):
        self.settings = settings
        self.policy = FeedUrlPolicy(settings.trusted_hosts)
        self._hardened = Manager(
            Config(
                ip_filter_enable=True,
                ip_filter_allow_loopback_ips=False,
                never_redirect=True,  # followed by hand, each hop checked
                default_timeout=(CONNECT_TIMEOUT, float(settings.timeout)),
                user_agent_override=USER_AGENT,
            )
        )

    @contextlib.contextmanager
    def _sessions(self) -> Iterator[tuple[requests.Session, requests.Session]]:
        """(guarded session for the world, plain session for STORYPUSH_FEED_HOSTS)."""
        with self._hardened.get_session() as guarded, requests.Session() as trusted:
            for session in (guarded, trusted):
                session.trust_env = False
                session.headers.update({"User-Agent": USER_AGENT, "Accept": ACCEPT})
            yield guarded, trusted

    def fetch(
        self, url: str, etag: str | None = None, last_modified: str | None = None, max_bytes: int | None = None
    ) -> FeedResponse:
        """GET the feed (or, with a smaller `max_bytes`, an article page), following redirects by hand.

        Raises:
            FeedProblem: refused URL or redirect, network error, timeout, 4xx/5xx, oversize body.
        """
        deadline = time.monotonic() + self.settings.timeout
        limit = min(max_bytes or self.settings.max_bytes, self.settings.max_bytes)
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        with self._sessions() as (guarded, trusted):
            for hop in range(MAX_REDIRECTS + 1):
                problem = self.policy.problem(url)
                if problem:
                    raise FeedProblem("blocked", f"{'redirect target' if hop else 'feed URL'} {problem}")
                session = trusted if self.policy.trusted(url) else guarded
                response = self._get(session, url, headers, deadline)
                with response:
                    if response.is_redirect:
                        url = urljoin(url, response.headers["Location"])
                        continue
                    return self._read(response, url, deadline, limit)
        raise FeedProblem("redirect", f"more than {MAX_REDIRECTS} redirects")

    def _get(self, session: requests.Session, url: str, headers: dict, deadline: float) -> requests.Response:
        remaining = max(0.1, deadline - time.monotonic())
        try:
            return session.get(
                url,
                headers=headers,
                stream=True,
                allow_redirects=False,
                timeout=(min(CONNECT_TIMEOUT, remaining), remaining),
            )
        except InvalidIPAddress:
            raise FeedProblem("blocked", "the host resolves to a private or loopback address") from None
        except requests.Timeout:
            raise FeedProblem("timeout", f"no answer within {self.settings.timeout} s") from None
        except requests.exceptions.SSLError:
            raise FeedProblem("tls", "TLS handshake failed (certificate not trusted or invalid)") from None
        except requests.ConnectionError:
            raise FeedProblem("connection", "could not connect (DNS or network error)") from None
        except requests.RequestException as exc:
            raise FeedProblem("connection", f"request failed ({type(exc).__name__})") from None

    def _read(self, response: requests.Response, url: str, deadline: float, limit: int) -> FeedResponse:
        status = response.status_code
        if status >= 300 and status != 304:
            raise FeedProblem(
                f"http_{status}",
                f"server answered {status} {response.reason or ''}".rstrip(),
                parse_retry_after(response.headers.get("Retry-After"), time.time()) if status in (429, 503) else None,
            )
        declared = response.headers.get("Content-Length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:  # "²".isdigit() too
            raise FeedProblem("too_large", f"feed is {int(declared)} bytes; the limit is {limit}")
        body = bytearray()
        try:
            while status != 304:
                chunk = response.raw.read1(READ_SIZE, decode_content=True)
                if not chunk:
                    break
                body += chunk
                if len(body) > limit:
                    raise FeedProblem("too_large", f"feed is over the limit of {limit} bytes")
                if time.monotonic() > deadline:
                    raise FeedProblem("timeout", f"feed took longer than {self.settings.timeout} s to arrive")
        except urllib3.exceptions.ReadTimeoutError:
            raise FeedProblem("timeout", f"feed took longer than {self.settings.timeout} s to arrive") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise FeedProblem("connection", f"connection broke while reading ({type(exc).__name__})") from None
        return FeedResponse(
            url=url,
            status=status,
            body=bytes(body),
            content_type=response.headers.get("Content-Type", ""),
            etag=response.headers.get("ETag"),
            last_modified=response.headers.get("Last-Modified"),
        )

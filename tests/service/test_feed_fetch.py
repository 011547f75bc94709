"""Fetching feeds over real HTTP from a local server: conditional GET, redirects, SSRF, limits."""

from __future__ import annotations

import socket
import time

import pytest

from service.errors import FeedProblem
from service.feed_fetch import FeedFetcher, FeedUrlPolicy
from service.settings import FeedSettings
from tests.helpers.feed_documents import Item, ghost_rss
from tests.helpers.feed_server import http_date

DOCUMENT = ghost_rss([Item(key="a", title="A", link="https://p.example/a", categories=["News"])])


@pytest.fixture
def fetcher(feed_server) -> FeedFetcher:
    return FeedFetcher(FeedSettings(trusted_hosts=(feed_server.authority,), timeout=2, max_bytes=64 * 1024))


def problem_of(fetcher: FeedFetcher, url: str) -> FeedProblem:
    with pytest.raises(FeedProblem) as caught:
        fetcher.fetch(url)
    return caught.value


def test_conditional_get_sends_the_validators_and_takes_a_304(fetcher, feed_server):
    modified = http_date(time.time() - 3600)
    feed_server.serve("/rss/", DOCUMENT, etag='W/"v1"', last_modified=modified)
    first = fetcher.fetch(feed_server.url("/rss/"))
    assert (first.status, first.etag, first.last_modified) == (200, 'W/"v1"', modified)
    assert first.body == DOCUMENT.encode() and first.content_type.startswith("application/rss+xml")
    again = fetcher.fetch(feed_server.url("/rss/"), first.etag, first.last_modified)
    assert again.not_modified and again.body == b""
    sent = feed_server.hits_for("/rss/")[-1].headers
    assert sent["If-None-Match"] == 'W/"v1"' and sent["If-Modified-Since"] == modified
    assert "storypush" in sent["User-Agent"] and "rss+xml" in sent["Accept"]
    assert "If-None-Match" not in feed_server.hits_for("/rss/")[0].headers


def test_last_modified_alone_also_gives_a_304(fetcher, feed_server):
    modified = http_date(time.time() - 60)
    feed_server.serve("/feed", DOCUMENT, last_modified=modified)
    assert fetcher.fetch(feed_server.url("/feed"), None, modified).status == 304


def test_redirects_are_followed_on_allowed_hosts(fetcher, feed_server):
    feed_server.serve("/feed/", DOCUMENT)
    feed_server.redirect("/old-feed", "/moved", 301)
    feed_server.redirect("/moved", feed_server.url("/feed/"), 307)
    response = fetcher.fetch(feed_server.url("/old-feed"))
    assert response.status == 200 and response.url == feed_server.url("/feed/")


@pytest.mark.parametrize(
    "target",
    ["http://203.0.113.7/feed", "https://10.1.2.3/feed", "https://localhost/feed", "file:///etc/passwd",
     "https://user:secret@publisher.example/feed"],
)  # fmt: skip
def test_redirects_to_plain_http_or_internal_hosts_are_refused(fetcher, feed_server, target):
    feed_server.redirect("/feed", target, 302)
    problem = problem_of(fetcher, feed_server.url("/feed"))
    assert problem.reason == "blocked" and problem.message.startswith("redirect target")


def test_redirect_loops_end(fetcher, feed_server):
    feed_server.redirect("/a", "/b")
    feed_server.redirect("/b", "/a")
    assert problem_of(fetcher, feed_server.url("/a")).reason == "redirect"
    assert len(feed_server.hits) == 6


def test_plain_http_needs_an_operator_listed_host(feed_server):
    feed_server.serve("/rss/", DOCUMENT)
    untrusted = FeedFetcher(FeedSettings())
    problem = problem_of(untrusted, feed_server.url("/rss/"))
    assert problem.reason == "blocked" and "STORYPUSH_FEED_HOSTS" in problem.message
    assert feed_server.hits == []


@pytest.mark.parametrize(
    ("host", "caught"),
    [("127.1", "resolves to"), ("2130706433", "resolves to"), ("0x7f.0.0.1", "resolves to"),
     ("[::ffff:127.0.0.1]", "points at"), ("localhost.", "points at")],
)  # fmt: skip
def test_names_and_numbers_that_reach_loopback_are_refused_before_connecting(feed_server, host, caught):
    """Spellings that pass a naive check are caught where it matters: the address resolved and
    connected to (requests-hardened), not only the URL as written."""
    problem = problem_of(FeedFetcher(FeedSettings()), f"https://{host}:{feed_server.port}/rss/")
    assert problem.reason == "blocked" and caught in problem.message, problem
    assert feed_server.hits == []


def test_a_redirect_to_a_loopback_spelling_is_refused_too(fetcher, feed_server):
    feed_server.serve("/secret", "internal")
    feed_server.redirect("/feed", f"https://127.1:{feed_server.port}/secret")
    assert problem_of(fetcher, feed_server.url("/feed")).reason == "blocked"
    assert feed_server.hits_for("/secret") == []


def test_oversize_feeds_are_refused_declared_or_streamed(fetcher, feed_server):
    feed_server.serve("/big", b"<rss>" + b" " * 70_000)
    assert problem_of(fetcher, feed_server.url("/big")).reason == "too_large"
    # A gzip bomb: 6 MB of zeros in a few kilobytes; decoding stops at the limit.
    feed_server.serve("/bomb", b"\0" * 6_000_000, gzip=True)
    assert problem_of(fetcher, feed_server.url("/bomb")).reason == "too_large"


def test_a_content_length_that_is_not_ascii_digits_is_not_trusted(fetcher, feed_server):
    # "²".isdigit() is True and int("²") raises: the declared size is ignored, the body read.
    feed_server.serve("/odd", DOCUMENT, headers={"Content-Length": "²", "Connection": "close"})
    assert fetcher.fetch(feed_server.url("/odd")).body == DOCUMENT.encode()


def test_compressed_feeds_are_decoded(fetcher, feed_server):
    feed_server.serve("/gz", DOCUMENT, gzip=True)
    assert fetcher.fetch(feed_server.url("/gz")).body == DOCUMENT.encode()


def test_slow_servers_time_out(fetcher, feed_server):
    feed_server.serve("/slow", DOCUMENT, delay=4)
    started = time.monotonic()
    assert problem_of(fetcher, feed_server.url("/slow")).reason == "timeout"
    # A drip of one byte every 50 ms would take over a minute; the deadline ends it.
    feed_server.serve("/drip", DOCUMENT, drip=0.05)
    assert problem_of(fetcher, feed_server.url("/drip")).reason == "timeout"
    assert time.monotonic() - started < 9


@pytest.mark.parametrize(("status", "reason"), [(404, "http_404"), (410, "http_410"), (500, "http_500")])
def test_http_errors_are_problems(fetcher, feed_server, status, reason):
    feed_server.serve("/feed", "error page", status=status)
    problem = problem_of(fetcher, feed_server.url("/feed"))
    assert problem.reason == reason and str(status) in problem.message and problem.retry_after is None


def test_retry_after_is_passed_on(fetcher, feed_server):
    feed_server.serve("/busy", "slow down", status=429, headers={"Retry-After": "300"})
    assert problem_of(fetcher, feed_server.url("/busy")).retry_after == 300
    feed_server.serve("/down", "down", status=503, headers={"Retry-After": http_date(time.time() + 600)})
    assert problem_of(fetcher, feed_server.url("/down")).retry_after == pytest.approx(600, abs=5)
    # A feed server's junk is a problem without a usable Retry-After, never a crash.
    feed_server.serve("/junk", "busy", status=429, headers={"Retry-After": "²"})
    assert problem_of(fetcher, feed_server.url("/junk")).retry_after is None


def test_connection_refused_is_a_problem(feed_server):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    fetcher = FeedFetcher(FeedSettings(trusted_hosts=(f"127.0.0.1:{port}",), timeout=2))
    assert problem_of(fetcher, f"http://127.0.0.1:{port}/feed").reason == "connection"


def test_proxy_variables_are_not_used(fetcher, feed_server, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    feed_server.serve("/rss/", DOCUMENT)
    assert fetcher.fetch(feed_server.url("/rss/")).status == 200


@pytest.mark.parametrize(
    ("url", "problem"),
    [("https://publisher.example/feed", None),
     ("https://publisher.example:8443/feed", None),
     ("http://publisher.example/feed", "must be https://"),
     ("https://192.168.1.10/feed", "private or loopback"),
     ("https://[fd00::1]/feed", "private or loopback"),
     ("https://169.254.169.254/latest/meta-data", "private or loopback"),
     ("https://cms.localhost/feed", "private or loopback"),
     ("ftp://publisher.example/feed", "must be an https:// URL"),
     ("https://user:pw@publisher.example/feed", "credentials"),
     ("https:///feed", "no host"),
     ("https://publisher.example/a feed", "whitespace"),
     ("https://publisher.example:99999/feed", "not a valid URL"),
     ("https://publisher.example/" + "x" * 2100, "longer than"),
     ("http://cms.intranet/feed", None),
     ("http://cms.intranet:8080/feed", "must be https://"),
     ("http://10.0.0.5:8080/rss", None)],
)  # fmt: skip
def test_feed_url_policy(url, problem):
    policy = FeedUrlPolicy(("cms.intranet", "10.0.0.5:8080"))
    found = policy.problem(url)
    assert (found is None) if problem is None else (problem in (found or "")), found

"""Retry-After as both HTTP clients (push sender, feed fetcher) read it: hostile input."""

from __future__ import annotations

import time

import pytest

from service.retry_after import MAX_RETRY_AFTER, parse_retry_after


def test_seconds_and_http_date():
    assert parse_retry_after("120", 0) == 120
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480 - 60) == 60
    assert parse_retry_after("soon", 0) is None
    assert parse_retry_after(None, 0) is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("²", None),  # str.isdigit() says yes; float() says no
        ("٣", None),  # an Arabic-Indic digit: RFC 9110's delay-seconds is ASCII DIGITs only
        ("-1", None),
        ("1.5", None),
        (" 7 ", 7),
        ("9" * 400, MAX_RETRY_AFTER),  # float() makes it inf: a lane paused for ever
        ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0),
    ],
)
def test_a_hostile_value_is_ignored_or_capped(value, seconds):
    assert parse_retry_after(value, time.time()) == seconds

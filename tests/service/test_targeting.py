"""Quiet hours and the daily frequency cap: the rules, their settings, their Redis counters."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from service.errors import SettingsError
from service.settings import load_settings
from service.store import keys
from service.store.frequency_cap import KEEP_SECONDS, FrequencyCapStore
from service.targeting import QuietHours, Targeting, parse_quiet_hours

NIGHT = QuietHours(22 * 60, 7 * 60)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("22:00-07:00", NIGHT), (" 9:30 - 17:45 ", QuietHours(570, 1065)), ("", None), (None, None), ("  ", None)],
)
def test_quiet_hours_parse(raw, expected):
    assert parse_quiet_hours(raw) == expected


@pytest.mark.parametrize("raw", ["22-07", "22:00", "24:00-07:00", "22:00-07:60", "07:00-07:00", "a:bc-d", "1-2-3"])
def test_bad_quiet_hours_are_refused_naming_the_variable(raw):
    with pytest.raises(SettingsError) as caught:
        parse_quiet_hours(raw)
    assert caught.value.variable == "STORYPUSH_QUIET_HOURS"


@pytest.mark.parametrize(
    ("clock", "quiet"),
    [("21:59", False), ("22:00", True), ("23:59", True), ("00:00", True), ("06:59", True), ("07:00", False)],
)
def test_a_window_wrapping_midnight(clock, quiet):
    hour, minute = map(int, clock.split(":"))
    assert NIGHT.contains(datetime(2026, 11, 28, hour, minute)) is quiet
    assert str(NIGHT) == "22:00-07:00"


def test_a_daytime_window():
    lunch = QuietHours(12 * 60, 13 * 60)
    assert [lunch.contains(datetime(2026, 1, 1, h, 30)) for h in (11, 12, 13)] == [False, True, False]


def test_local_time_is_the_subscribers_own():
    rules = Targeting(quiet_hours=NIGHT)
    noon_utc = datetime(2026, 11, 28, 12, 0, tzinfo=UTC).timestamp()
    sydney = rules.local_time("Australia/Sydney", noon_utc)  # UTC+11 in November
    assert (sydney.hour, rules.quiet(sydney)) == (23, True)
    london = rules.local_time("Europe/London", noon_utc)
    assert (london.hour, rules.quiet(london)) == (12, False)
    # No zone reported (or one this machine lacks): UTC.
    assert rules.local_time(None, noon_utc).hour == 12
    assert rules.local_time("Mars/Olympus_Mons", noon_utc).hour == 12
    # The day the cap counts in is the subscriber's: already tomorrow in Kiribati.
    assert Targeting.cap_day(rules.local_time("Pacific/Kiritimati", noon_utc)) == date(2026, 11, 29)


def test_no_rules_by_default():
    assert not Targeting().active
    assert not Targeting().quiet(datetime(2026, 1, 1, 3, 0))
    assert Targeting(frequency_cap=3).active and Targeting(quiet_hours=NIGHT).active


def test_settings_read_the_rules():
    settings = load_settings({"STORYPUSH_FREQUENCY_CAP": "4", "STORYPUSH_QUIET_HOURS": "22:00-07:00"})
    assert settings.targeting == Targeting(frequency_cap=4, quiet_hours=NIGHT)
    assert load_settings({}).targeting == Targeting()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STORYPUSH_FREQUENCY_CAP", "-1"),
        ("STORYPUSH_FREQUENCY_CAP", "101"),
        ("STORYPUSH_FREQUENCY_CAP", "many"),
        ("STORYPUSH_QUIET_HOURS", "night"),
    ],
)
def test_bad_rule_settings_stop_start_up(name, value):
    with pytest.raises(SettingsError) as caught:
        load_settings({name: value})
    assert caught.value.variable == name


def test_cap_counts_per_subscriber_and_their_day(redis_client):
    caps = FrequencyCapStore(redis_client)
    today, tomorrow = date(2026, 11, 28), date(2026, 11, 29)
    assert caps.take([(7, today), (8, today), (7, today)], cap=2) == [True, True, True]
    assert caps.take([(7, today), (8, today), (7, tomorrow), (9, today)], cap=2) == [False, True, True, True]
    assert (caps.count(7, today), caps.count(8, today), caps.count(7, tomorrow)) == (3, 2, 1)
    assert caps.take([], cap=2) == []
    ttl = redis_client.ttl(keys.frequency_cap(today))
    assert KEEP_SECONDS - 5 < ttl <= KEEP_SECONDS


def test_cap_counters_saturate_instead_of_wrapping(redis_client):
    caps = FrequencyCapStore(redis_client)
    day = date(2026, 11, 28)
    results = caps.take([(3, day)] * 300, cap=100)
    assert results == [True] * 100 + [False] * 200
    assert caps.count(3, day) == 255
    assert caps.take([(3, day)], cap=100) == [False]

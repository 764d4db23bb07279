"""GCRA send rates, pure, with a fake clock: the burst, the steady rate, the waits, the window
bound, clocks that go back, rates read from text, Retry-After read from a provider."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from engine.channels.ratelimit import (
    MemoryRates,
    Rate,
    RateError,
    SendRate,
    gcra,
    parse_rate,
    retry_after_seconds,
)


def rate(text: str) -> Rate:
    parsed = parse_rate(text)
    assert parsed is not None
    return parsed


@pytest.mark.parametrize(
    ("text", "count", "per", "burst"),
    [("100/s", 100, 1, 100), (" 10 / s ", 10, 1, 10), ("600/min", 600, 60, 10),
     ("30/min", 30, 60, 1), ("5000/h", 5000, 3600, 1), ("2.5/s", 2.5, 1, 2),
     ("7200/hour", 7200, 3600, 2), ("1/second", 1, 1, 1)],
)  # fmt: skip
def test_rates_are_read_from_text(text, count, per, burst):
    assert rate(text) == Rate(count=count, per=per, burst=burst)
    assert rate(text).interval == pytest.approx(per / count)


@pytest.mark.parametrize("text", [None, "", "  ", "unlimited", "UNLIMITED"])
def test_no_rate_is_unlimited(text):
    assert parse_rate(text) is None


@pytest.mark.parametrize("text", ["100", "100/d", "fast", "-1/s", "0/s", "1/0", "/s", "1e3/s"])
def test_a_bad_rate_is_refused_naming_the_variable(text):
    with pytest.raises(RateError, match=r"^NUDGE_EMAIL_RATE: .*(100/s|more than 0)") as refused:
        parse_rate(text, name="NUDGE_EMAIL_RATE")
    assert "\n" not in str(refused.value)


def test_a_burst_then_one_send_per_interval():
    limit = rate("10/s")
    state, now, granted = None, 1000.0, 0
    for _ in range(20):
        grant = gcra(state, now, limit)
        if not grant.allowed:
            break
        state, granted = grant.tat, granted + 1
    assert granted == 10, "a burst of one second's worth"
    refused = gcra(state, now, limit)
    assert not refused.allowed and refused.tat == state
    assert refused.wait == pytest.approx(0.1)
    assert not gcra(state, now + 0.099, limit).allowed
    later = gcra(state, now + refused.wait, limit)
    assert later.allowed and later.wait == 0.0
    assert not gcra(later.tat, now + refused.wait, limit).allowed, "then one per 0.1 s"


def test_a_quiet_channel_earns_no_more_than_one_burst():
    limit = rate("5/s")
    state = None
    for _ in range(5):
        state = gcra(state, 0.0, limit).tat
    # An hour of silence: still only one burst at once.
    now, granted = 3600.0, 0
    while (grant := gcra(state, now, limit)).allowed:
        state, granted = grant.tat, granted + 1
    assert granted == 5


def test_a_state_from_a_clock_ahead_of_ours_does_not_block_the_channel():
    limit = rate("1/min")
    far_ahead = 10_000.0
    assert gcra(far_ahead, 0.0, limit).allowed, "a tat far ahead is reset"
    skewed = gcra(None, 0.0, limit).tat + 30.0  # a worker whose clock is 30 s ahead wrote it
    assert not gcra(skewed, 0.0, limit).allowed, (
        "skew under CLOCK_SLACK: stricter, never a new burst"
    )
    just_ahead = gcra(None, 0.0, limit).tat  # one interval ahead: the normal state
    assert not gcra(just_ahead, 0.0, limit).allowed


@pytest.mark.parametrize("text", ["10/s", "100/s", "30/min", "3/s"])
def test_over_any_window_no_more_than_burst_plus_rate_times_window(text):
    """Random arrivals on a fake clock: every window of the granted times stays in the bound."""
    limit, rng = rate(text), random.Random(7)
    state, now, times = MemoryRates(), 0.0, []
    for _ in range(3_000):
        now += rng.expovariate(limit.count / limit.per * 20)  # offered at 20 times the rate
        if state.acquire("email", limit, now) == 0.0:
            times.append(now)
    assert len(times) > limit.burst
    for i, start in enumerate(times):
        for width in (limit.interval, 1.0, 5.0, 60.0):
            inside = sum(1 for t in times[i:] if t < start + width)
            assert inside <= limit.burst + width / limit.interval + 1e-6, (start, width, inside)
    span = times[-1] - times[0]
    # Offered 20 times the rate, the channel sends at nearly the rate (a grant waits for the
    # next arrival after its slot: 1/21 of an interval on average when the burst is 1).
    assert len(times) >= 0.9 * (limit.burst + span / limit.interval)


def test_the_wait_told_is_the_wait_needed():
    limit, state = rate("4/s"), MemoryRates()
    now = 50.0
    while state.acquire("sms", limit, now) == 0.0:
        pass
    wait = state.acquire("sms", limit, now)
    assert wait > 0
    assert state.acquire("sms", limit, now + wait * 0.99) > 0
    assert state.acquire("sms", limit, now + wait) == 0.0


def test_channels_have_their_own_rates_and_unlimited_is_the_default():
    limits = SendRate({"email": rate("1/s"), "sms": None})
    assert limits.rate("sms") is None and limits.rate("push") is None
    assert limits.acquire("email", 0.0) == 0.0
    assert limits.acquire("email", 0.0) == pytest.approx(1.0)
    assert all(limits.acquire("sms", 0.0) == 0.0 for _ in range(1_000))
    assert all(SendRate.unlimited().acquire("email", 0.0) == 0.0 for _ in range(1_000))
    assert str(rate("100/s")) == "100/s" and str(rate("600/min")) == "600/min"


def test_retry_after_in_seconds_or_as_an_http_date():
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC).timestamp()
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds(" 0 ", now) == 0.0
    in_90s = format_datetime(datetime(2026, 12, 1, 12, 1, 30, tzinfo=UTC), usegmt=True)
    assert in_90s == "Tue, 01 Dec 2026 12:01:30 GMT"
    assert retry_after_seconds(in_90s, now) == pytest.approx(90.0)
    assert retry_after_seconds("Tue, 01 Dec 2026 11:00:00 GMT", now) == 0.0, "past: now"
    for unreadable in (None, "", "soon", "-5", "1.5"):
        assert retry_after_seconds(unreadable, now) is None


def test_a_stream_at_exactly_the_rate_passes_whole_for_hours():
    """Floating-point sums of the interval neither refuse a send on time nor reset the state."""
    limit, state = rate("10/s"), MemoryRates()
    assert all(state.acquire("email", limit, 1.7e9 + i * 0.1) == 0.0 for i in range(36_000))
    last = 1.7e9 + 35_999 * 0.1
    extra = [state.acquire("email", limit, last) for _ in range(10)]
    assert extra[:9] == [0.0] * 9 and extra[9] > 0, "the burst's other 9 slots, not one more"

"""Send rates per channel: GCRA, the rule every dispatcher worker applies to one shared state.

A channel's rate (``NUDGE_EMAIL_RATE=100/s``, ``NUDGE_SMS_RATE=1/s``, …) is a `Rate`; the
dispatcher asks a `SendRate` before each send and, when the channel is throttled, puts the action
back for the time it is told to wait — without counting an attempt and without touching it: a
throttled send is delayed, never dropped.

Why GCRA (the generic cell rate algorithm, a token bucket written as one timestamp): its whole
state is one number per channel, the *theoretical arrival time* `tat` of the next send, so the
shared state is one row (``send_rates``) or one Redis key, and one acquire is one conditional
update of that number — no refill job, no per-window counters, no clean-up. It allows a burst
of `Rate.burst` sends, then one every `Rate.interval` seconds; over any window of W seconds at
most ``burst + W / interval`` sends are granted (the property the tests check across workers).
A fixed window would allow twice the rate at a window's edge; a sliding log would store one row
per send. Measured cost of one acquire, median of 2,000, one worker, `bench/send_rates.py` on this
machine (2 cores shared with other jobs, load average 3–9 during the runs, so ranges):

- in-process (`MemoryRates`): 1–2 µs;
- SQLite (`engine.store.send_rates.DatabaseRates`: the UPDATE alone, autocommit): 0.4–0.8 ms;
- PostgreSQL (same UPDATE, in a transaction with ``synchronous_commit`` off): 1–4 ms. Measured
  interleaved (A, B, A, B, … in one process, so under the same load): 2.0 ms against 4.2 ms for
  the UPDATE in autocommit waiting for its WAL flush; and in another run 4.1 ms (autocommit)
  against 5.3 ms (BEGIN … COMMIT, flushed) — hence the choice;
- Redis (`engine.channels.redis_rates.RedisRates`, one EVALSHA): 0.07–0.15 ms.

At 100 emails/s a worker has 10 ms per email, so the database limiter costs 4–40 % of that budget
on PostgreSQL under load and Redis about 1 % — Redis is the production choice for fast channels.
A refused acquire costs one more statement, and the dispatcher asks once per channel per run
when a channel is throttled (the rest of the run's sends wait without asking).

The times are the engine's clock (the dispatcher's `now`), like due times and retry times: all
workers sharing a database share its clock (the wall clock in production; milliseconds of skew
between hosts only make the slower one stricter). A `tat` more than `CLOCK_SLACK` beyond one burst
ahead (a clock that went back, a replay clock) is reset, so it cannot block a channel for long.

`retry_after_seconds` reads a provider's ``Retry-After`` (seconds or an HTTP date).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Protocol

__all__ = [
    "CLOCK_SLACK",
    "DEFAULT_PROVIDER_WAIT",
    "EPSILON",
    "Grant",
    "MemoryRates",
    "Rate",
    "RateError",
    "RateState",
    "SendRate",
    "gcra",
    "parse_rate",
    "retry_after_seconds",
]

# When a provider answers 429 without saying how long to wait.
DEFAULT_PROVIDER_WAIT = 30.0
# Slack in the comparison with the tolerance (seconds): sums of intervals are not exact in
# floating point (ten of 0.1 s are 1.0000000000000002 s); a microsecond changes no rate.
EPSILON = 1e-6
# How far a stored `tat` may be ahead of a worker's clock (beyond one burst) before it is taken
# for a clock that went back and reset. Not less: workers' clocks differ by milliseconds, and a
# worker slightly behind must not see a full burst as "too far ahead" and send another one.
CLOCK_SLACK = 60.0

_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0, "h": 3600.0,
          "hour": 3600.0}  # fmt: skip
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*([a-z]+)\s*$")


class RateError(ValueError):
    """A rate that cannot be read (the message says what was expected)."""


@dataclass(frozen=True, slots=True)
class Rate:
    """`count` sends per `per` seconds, with bursts of up to `burst` sends."""

    count: float
    per: float
    burst: int

    @property
    def interval(self) -> float:
        """Seconds between sends at the steady rate (GCRA's emission interval T)."""
        return self.per / self.count

    @property
    def tolerance(self) -> float:
        """How far ahead of now `tat` may be for a send to pass (GCRA's tau)."""
        return (self.burst - 1) * self.interval

    def __str__(self) -> str:
        unit = {1.0: "s", 60.0: "min", 3600.0: "h"}.get(self.per, f"{self.per:g}s")
        return f"{self.count:g}/{unit}"


def parse_rate(text: str | None, *, name: str = "rate") -> Rate | None:
    """``"100/s"``, ``"600/min"``, ``"5000/h"`` → a `Rate`; empty, ``unlimited`` or None → None.

    The burst is one second's worth of sends (at least 1): ``100/s`` sends 100 at once after a
    quiet spell, ``30/min`` one at a time. Raises RateError naming `name` for anything else.
    """
    if text is None or not text.strip() or text.strip().lower() == "unlimited":
        return None
    match = _RATE.match(text.lower())
    if not match or match.group(2) not in _UNITS:
        raise RateError(
            f"{name}: expected sends per time such as 100/s, 600/min or 5000/h, or unlimited "
            f"(got {text!r})"
        )
    count, per = float(match.group(1)), _UNITS[match.group(2)]
    if count <= 0:
        raise RateError(
            f"{name}: the rate must be more than 0 (got {text!r}; unlimited: leave it unset)"
        )
    burst = max(1, math.floor(count / per))
    return Rate(count=count, per=per, burst=burst)


@dataclass(frozen=True, slots=True)
class Grant:
    """The answer to one acquire: `allowed`, the channel's new `tat`, or the `wait` in seconds."""

    allowed: bool
    tat: float
    wait: float


def gcra(tat: float | None, now: float, rate: Rate) -> Grant:
    """One GCRA step: may a send go at `now`, given the channel's stored `tat` (None: never sent)?

    Granted: the new `tat` to store is one interval after max(tat, now). Refused: `tat` is
    unchanged and `wait` is how long until a send would pass. A `tat` more than `CLOCK_SLACK`
    past a burst ahead (the clock went back) counts as none.
    """
    interval, tolerance = rate.interval, rate.tolerance
    ahead = tat is not None and tat > now + tolerance + interval + CLOCK_SLACK
    base = now if tat is None or tat < now or ahead else tat
    if base - now > tolerance + EPSILON:
        return Grant(False, base, base - tolerance - now)
    return Grant(True, base + interval, 0.0)


class RateState(Protocol):
    """Where the channels' `tat`s live, shared by the workers that use it (see the docstring)."""

    def acquire(self, channel: str, rate: Rate, now: float) -> float:
        """Take one send of `channel` at `now`: 0.0 when granted, else the seconds to wait."""
        ...


class MemoryRates:
    """The state in this process (one worker, tests): a dict under a lock."""

    def __init__(self) -> None:
        self._tats: dict[str, float] = {}
        self._lock = threading.Lock()

    def acquire(self, channel: str, rate: Rate, now: float) -> float:
        """See `RateState.acquire`."""
        with self._lock:
            grant = gcra(self._tats.get(channel), now, rate)
            if grant.allowed:
                self._tats[channel] = grant.tat
            return grant.wait


class SendRate:
    """The dispatcher's question: may `channel` send now? Channels without a rate: always."""

    def __init__(self, rates: Mapping[str, Rate | None], state: RateState | None = None) -> None:
        self.rates = {channel: rate for channel, rate in rates.items() if rate is not None}
        self.state: RateState = state if state is not None else MemoryRates()

    @classmethod
    def unlimited(cls) -> SendRate:
        """No channel limited (the dispatcher's default)."""
        return cls({})

    def rate(self, channel: str) -> Rate | None:
        """The channel's rate, or None when it is not limited."""
        return self.rates.get(channel)

    def acquire(self, channel: str, now: float) -> float:
        """Take one send of `channel` at `now`: 0.0 when it may go, else the seconds to wait."""
        rate = self.rates.get(channel)
        if rate is None:
            return 0.0
        return self.state.acquire(channel, rate, now)


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A ``Retry-After`` header as seconds from `now`: delay-seconds or an HTTP date (RFC 9110
    §10.2.3); None when absent or unreadable; a date in the past is 0."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)

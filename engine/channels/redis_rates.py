"""The send rates shared in Redis (``NUDGE_RATE_LIMIT_BACKEND=redis``): GCRA in one Lua script.

The production choice when many dispatcher workers send fast: one acquire is one ``EVALSHA`` (a
round trip, no transaction in the engine database). The script is `engine.channels.ratelimit.gcra`
in Lua, run atomically by Redis; the key ``{prefix}{channel}`` holds `tat` and expires when it no
longer matters (one burst after it), so an idle channel leaves nothing behind.

Times are the engine's clock passed by the caller, as with the database backend (Redis's own
TIME would ignore a test's or a replay's clock). Numbers cross as strings: a Lua number returned
to Redis is truncated to an integer.

Measured (`bench/send_rates.py`): see `engine.channels.ratelimit`'s docstring.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from engine.channels.ratelimit import CLOCK_SLACK, EPSILON, Rate

if TYPE_CHECKING:
    import redis

__all__ = ["DEFAULT_PREFIX", "GCRA_SCRIPT", "RedisRates", "redis_client"]

DEFAULT_PREFIX = "nudge:send-rate:"

# KEYS[1]: the channel's key; ARGV: now, interval, tolerance, epsilon, clock slack (seconds,
# as strings).
# Returns the wait in seconds as a string: "0" when granted.
GCRA_SCRIPT = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local epsilon = tonumber(ARGV[4])
local slack = tonumber(ARGV[5])
local tat = tonumber(redis.call('GET', KEYS[1]))
local base = now
if tat ~= nil and tat >= now and tat <= now + tolerance + interval + slack then
  base = tat
end
if base - now > tolerance + epsilon then
  return string.format('%.17g', base - tolerance - now)
end
local new = base + interval
local ttl = math.ceil((new - now + slack) * 1000)
redis.call('SET', KEYS[1], string.format('%.17g', new), 'PX', ttl)
return '0'
"""


class RedisRates:
    """`engine.channels.ratelimit.RateState` in Redis, shared by every worker using it."""

    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = client
        self.prefix = prefix
        self._script: Any = client.register_script(GCRA_SCRIPT)

    def acquire(self, channel: str, rate: Rate, now: float) -> float:
        """One EVALSHA (the script is loaded again by redis-py if the server lost it)."""
        args = [
            repr(now),
            repr(rate.interval),
            repr(rate.tolerance),
            repr(EPSILON),
            repr(CLOCK_SLACK),
        ]
        answer = self._script(keys=[self.prefix + channel], args=args)
        wait = float(answer.decode() if isinstance(answer, bytes) else answer)
        return wait if math.isfinite(wait) and wait > 0 else 0.0


def redis_client(url: str | None) -> redis.Redis:
    """A client for ``redis://[:password@]host:port/db`` (or ``rediss://``), or Feast's form
    ``host:port[,db=N][,password=…][,ssl=true]`` that NUDGE_REDIS_URL may also hold; none:
    127.0.0.1:6379. Short timeouts: a limiter that hangs would stop every send."""
    import redis

    timeouts: dict[str, Any] = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}
    text = (url or "").strip() or "127.0.0.1:6379"
    if "://" in text:
        return redis.Redis.from_url(text, **timeouts)
    address, *options = [part.strip() for part in text.split(",")]
    host, _, port = address.rpartition(":") if ":" in address else (address, "", "6379")
    values = dict(option.split("=", 1) for option in options if "=" in option)
    return redis.Redis(
        host=host or "127.0.0.1",
        port=int(port or 6379),
        db=int(values.get("db", 0)),
        password=unquote(values["password"]) if "password" in values else None,
        ssl=values.get("ssl", "").lower() == "true",
        **timeouts,
    )

"""Which time zone a customer lives in: profile → country → configured default."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["COUNTRY_ZONES", "customer_zone", "is_zone", "next_local_time", "zone_named"]

# The most populous zone of each country; a fallback when a profile names only its country.
COUNTRY_ZONES: dict[str, str] = {
    "US": "America/New_York", "CA": "America/Toronto", "MX": "America/Mexico_City",
    "BR": "America/Sao_Paulo", "AR": "America/Argentina/Buenos_Aires", "GB": "Europe/London",
    "IE": "Europe/Dublin", "DE": "Europe/Berlin", "FR": "Europe/Paris", "ES": "Europe/Madrid",
    "IT": "Europe/Rome", "NL": "Europe/Amsterdam", "BE": "Europe/Brussels", "CH": "Europe/Zurich",
    "AT": "Europe/Vienna", "SE": "Europe/Stockholm", "NO": "Europe/Oslo", "DK": "Europe/Copenhagen",
    "FI": "Europe/Helsinki", "PL": "Europe/Warsaw", "PT": "Europe/Lisbon", "GR": "Europe/Athens",
    "TR": "Europe/Istanbul", "RU": "Europe/Moscow", "IN": "Asia/Kolkata", "CN": "Asia/Shanghai",
    "JP": "Asia/Tokyo", "KR": "Asia/Seoul", "SG": "Asia/Singapore", "ID": "Asia/Jakarta",
    "AU": "Australia/Sydney", "NZ": "Pacific/Auckland", "ZA": "Africa/Johannesburg",
    "NG": "Africa/Lagos", "EG": "Africa/Cairo", "AE": "Asia/Dubai", "IL": "Asia/Jerusalem",
}  # fmt: skip


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def is_zone(name: str) -> bool:
    """Whether `name` is an IANA time zone this machine knows."""
    return _zone(name) is not None


def zone_named(name: str) -> ZoneInfo:
    """The zone called `name`, or UTC when there is none of that name."""
    return _zone(name) or ZoneInfo("UTC")


def customer_zone(profile: Mapping[str, Any], default: str = "UTC") -> ZoneInfo:
    """The profile's IANA zone if valid, else its country's main zone, else `default`."""
    for name in (
        profile.get("timezone"),
        COUNTRY_ZONES.get(str(profile.get("country") or "").upper()),
    ):
        if name and (zone := _zone(str(name))) is not None:
            return zone
    return _zone(default) or ZoneInfo("UTC")


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def next_local_time(
    after: float, zone: ZoneInfo, local_time: time, days: Sequence[str] | None = None
) -> float:
    """The first moment at or after `after` when the customer's wall clock shows `local_time` on one of `days`.

    Built from the wall clock day by day, so that 09:00 stays 09:00 across DST changes; a time
    that does not exist on a spring-forward day is moved forward by the gap.
    """
    allowed = set(days or WEEKDAYS)
    day = datetime.fromtimestamp(after, zone).date()
    for _ in range(15):
        if WEEKDAYS[day.weekday()] in allowed:
            # fold=0 reads a wall time inside a DST gap with the offset before the change, which
            # moves it forward by the gap (02:30 on a spring-forward night becomes 03:30).
            stamp = datetime.combine(day, local_time, tzinfo=zone).timestamp()
            if stamp >= after:
                return stamp
        day += timedelta(days=1)
    raise ValueError("no allowed day within two weeks")

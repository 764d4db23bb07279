"""Durations written the way operators write them: ``30s``, ``15m``, ``2h``, ``7d``, ``2w``."""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["format_duration", "parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration(text: str | int | float | timedelta) -> timedelta:
    """``"90m"`` → 1 h 30 min; a bare number means seconds. Raises ValueError with the form."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"duration must not be negative (got {text})")
        return timedelta(seconds=text)
    match = _PATTERN.match(str(text))
    if not match:
        raise ValueError(f"expected a duration such as 30s, 15m, 2h, 7d or 2w (got {text!r})")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def format_duration(value: timedelta) -> str:
    """The shortest exact form: 3600 s → ``1h``, 5400 s → ``90m``."""
    seconds = value.total_seconds()
    for unit in ("w", "d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"

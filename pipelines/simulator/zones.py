"""Time zones of simulated customers, and a fast table of their UTC offsets per day."""

from __future__ import annotations

import numpy as np
import pandas as pd

# (IANA zone, country, weight): a shop selling mostly in North America and Europe.
ZONES: tuple[tuple[str, str, float], ...] = (
    ("America/New_York", "US", 0.20),
    ("America/Chicago", "US", 0.10),
    ("America/Los_Angeles", "US", 0.12),
    ("America/Sao_Paulo", "BR", 0.05),
    ("Europe/London", "GB", 0.14),
    ("Europe/Berlin", "DE", 0.12),
    ("Europe/Paris", "FR", 0.08),
    ("Asia/Kolkata", "IN", 0.07),
    ("Asia/Tokyo", "JP", 0.05),
    ("Australia/Sydney", "AU", 0.07),
)
ZONE_NAMES = np.array([z for z, _, _ in ZONES])
ZONE_COUNTRIES = np.array([c for _, c, _ in ZONES])
ZONE_WEIGHTS = np.array([w for _, _, w in ZONES]) / sum(w for _, _, w in ZONES)


def utc_offset_table(start: pd.Timestamp, days: int) -> np.ndarray:
    """Offsets in days, shape (zones, days + 2): row z, column d+1 is zone z's offset on day d.

    Read at noon UTC each day; DST switches at night, so noon is right for the daytime events
    the simulator places.
    """
    noons = pd.date_range(start - pd.Timedelta(days=1), periods=days + 2, freq="D", tz="UTC")
    noons = noons + pd.Timedelta(hours=12)
    table = np.empty((len(ZONES), days + 2))
    for z, (zone, _, _) in enumerate(ZONES):
        local = noons.tz_convert(zone)
        table[z] = np.array([ts.utcoffset().total_seconds() for ts in local]) / 86400.0
    return table

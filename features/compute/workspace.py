"""The shared ground of every feature and label query: events, snapshots and the population.

A `Workspace` is one in-memory DuckDB connection holding

- ``events``: the lake columns the features need, of the event types they use;
- ``snapshots``: the snapshot times (UTC), one row each;
- ``population``: one row per (customer, snapshot) for every customer with at least one event
  (of any type) at or before the snapshot — the customers there is something to score about;
- ``profiles``: customer_id, a time zone DuckDB knows (else null), signup_at;

and, built on first use, the aggregates several views share. Every query keeps to
``timestamp <= snapshot_ts`` for features and ``snapshot_ts < timestamp <= snapshot_ts + H`` for
labels; nothing else decides what a row may see.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime
from typing import Final, TypeAlias

import duckdb
import pandas as pd
import pyarrow as pa

from features.schema import ENTITY_KEY, TIMESTAMP_COLUMN, Dtype

__all__ = [
    "DAY_US",
    "DEFAULT_HALF_LIFE_DAYS",
    "EVENT_COLUMNS",
    "EventsInput",
    "SnapshotsInput",
    "Workspace",
    "age_days",
    "as_snapshots",
    "conform",
    "open_workspace",
]

EventsInput: TypeAlias = pa.Table | pd.DataFrame | duckdb.DuckDBPyRelation
SnapshotsInput = Iterable[datetime | date | str | pd.Timestamp]

# The lake columns feature computation reads; a pipeline can read only these from the lake.
EVENT_COLUMNS: Final = ("customer_id", "event_type", "timestamp", "amount")
PURCHASE: Final = "purchase_completed"
REFUND: Final = "refund"
SESSION: Final = "session_start"
CART_ABANDONED: Final = "cart_abandoned"
EMAIL_SENT: Final = "email_sent"
EMAIL_OPENED: Final = "email_opened"
EMAIL_CLICKED: Final = "email_clicked"
EMAIL_BOUNCED: Final = "email_bounced"
UNSUBSCRIBED: Final = "unsubscribed"
USED_EVENT_TYPES: Final = (
    PURCHASE,
    REFUND,
    SESSION,
    CART_ABANDONED,
    EMAIL_SENT,
    EMAIL_OPENED,
    EMAIL_CLICKED,
    EMAIL_BOUNCED,
    UNSUBSCRIBED,
)
DAY_US: Final = 86_400_000_000  # microseconds in a day: ages are computed from epoch_us
LONGEST_WINDOW_DAYS: Final = 365
# Half-life of the time-decayed email counts: an email a month old weighs half a fresh one.
DEFAULT_HALF_LIFE_DAYS: Final = 30.0


class Workspace:
    """A DuckDB connection with the tables described in the module docstring."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, half_life_days: float, has_properties: bool = False
    ) -> None:
        self.con = con
        self.half_life_days = half_life_days
        # Whether ``raw_events`` carries the lake's ``properties`` (JSON) column.
        self.has_properties = has_properties
        self._built: set[str] = set()

    def df(self, sql: str) -> pd.DataFrame:
        """Run a query and return its result as pandas."""
        return self.con.sql(sql).df()

    def window_stats(self) -> str:
        """Name of the table of per-(customer, snapshot) counts and sums over the last 365 days."""
        return self._once("window_stats", _window_stats_sql(self.half_life_days))

    def purchase_stats(self) -> str:
        """Name of the table of all-time purchase history up to each snapshot."""
        return self._once("purchase_stats", _purchase_stats_sql)

    def last_seen(self) -> str:
        """Name of the table of each customer's latest session, email, open and unsubscribe ≤ t."""
        return self._once("last_seen", _last_seen_sql)

    def _once(self, name: str, sql: str) -> str:
        if name not in self._built:
            self.con.execute(f"CREATE TEMP TABLE {name} AS {sql}")
            self._built.add(name)
        return name


@contextmanager
def open_workspace(
    events: EventsInput,
    snapshots: SnapshotsInput,
    customers: pd.DataFrame | None = None,
    *,
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
) -> Iterator[Workspace]:
    """A workspace over lake-shaped `events` (extra columns are ignored) at `snapshots`."""
    if not half_life_days > 0:
        raise ValueError(f"half_life_days must be positive (got {half_life_days})")
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        raw = _as_arrow(events)
        con.register("raw_events", raw)
        con.register("snapshot_input", pd.DataFrame({"snapshot_ts": as_snapshots(snapshots)}))
        con.register("profile_input", _profiles(customers))
        con.execute(_SETUP_SQL.format(humans=_HUMANS if "properties" in raw.column_names else ""))
        yield Workspace(con, float(half_life_days), "properties" in raw.column_names)
    finally:
        con.close()


def as_snapshots(snapshots: SnapshotsInput) -> pd.DatetimeIndex:
    """Sorted, distinct, UTC snapshot times; naive values are read as UTC."""
    stamps = []
    for value in snapshots:
        stamp = pd.Timestamp(value)
        stamps.append(stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC"))
    if not stamps:
        raise ValueError("at least one snapshot time is needed")
    return pd.DatetimeIndex(sorted(set(stamps)), name="snapshot_ts").as_unit("us")


def conform(table: pd.DataFrame, features: Mapping[str, Dtype]) -> pd.DataFrame:
    """The contract's columns in order and dtypes, sorted by snapshot then customer.

    An integer feature that came out null fails here: the contract says it never is.
    """
    columns = [ENTITY_KEY, TIMESTAMP_COLUMN, *features]
    out = table[columns].astype(dict(features))
    out[ENTITY_KEY] = out[ENTITY_KEY].astype(object)
    out[TIMESTAMP_COLUMN] = pd.to_datetime(out[TIMESTAMP_COLUMN], utc=True).dt.as_unit("us")
    return out.sort_values([TIMESTAMP_COLUMN, ENTITY_KEY], ignore_index=True)


def _as_arrow(events: EventsInput) -> pa.Table:
    names = events.column_names if isinstance(events, pa.Table) else list(events.columns)
    missing = [c for c in EVENT_COLUMNS if c not in names]
    if missing:
        raise ValueError(f"events lack column(s) {missing}; expected the lake's columns")
    # The JSON properties come along when present: definitions' property features read them.
    wanted = [*EVENT_COLUMNS, *(["properties"] if "properties" in names else [])]
    if isinstance(events, duckdb.DuckDBPyRelation):
        return events.select(*wanted).to_arrow_table()
    if isinstance(events, pd.DataFrame):
        return pa.Table.from_pandas(events[wanted], preserve_index=False)
    return events.select(wanted)


def _profiles(customers: pd.DataFrame | None) -> pd.DataFrame:
    """customer_id, timezone, signup_at (UTC) from a profile table that may lack the last two."""
    if customers is None or "customer_id" not in customers.columns:
        customers = pd.DataFrame({"customer_id": pd.Series(dtype=object)})
    n = len(customers)
    timezone = customers["timezone"] if "timezone" in customers else pd.Series([None] * n)
    signup = customers["signup_at"] if "signup_at" in customers else pd.Series([pd.NaT] * n)
    return pd.DataFrame(
        {
            "customer_id": customers["customer_id"].astype(str).to_numpy(),
            "timezone": timezone.astype(object).where(timezone.notna(), None).to_numpy(),
            "signup_at": pd.to_datetime(signup, utc=True).to_numpy(),
        }
    ).astype({"signup_at": "datetime64[us, UTC]"})


# Opens and clicks a machine made (properties.machine: an image proxy's prefetch, a link
# scanner; engine.channels.machine_events) are not engagement: left out when the lake's
# properties are read.
_HUMANS = (
    f"AND NOT (event_type IN ('{EMAIL_OPENED}', '{EMAIL_CLICKED}') AND "
    "coalesce(json_extract_string(properties, '$.machine') = 'true', false))"
)
# The cast to TIMESTAMPTZ makes a naive timestamp column UTC (the session time zone).
_SETUP_SQL = f"""
CREATE TEMP TABLE snapshots AS
    SELECT snapshot_ts::TIMESTAMPTZ AS snapshot_ts FROM snapshot_input;

CREATE TEMP TABLE population AS
    SELECT f.customer_id, s.snapshot_ts, f.first_event_ts
    FROM (
        SELECT customer_id::VARCHAR AS customer_id, min(timestamp::TIMESTAMPTZ) AS first_event_ts
        FROM raw_events GROUP BY 1
    ) f
    JOIN snapshots s ON f.first_event_ts <= s.snapshot_ts;

CREATE TEMP TABLE events AS
    SELECT customer_id::VARCHAR AS customer_id, event_type, timestamp::TIMESTAMPTZ AS ts,
           amount::DOUBLE AS amount
    FROM raw_events
    WHERE event_type IN ({", ".join(f"'{t}'" for t in USED_EVENT_TYPES)}) {{humans}};

CREATE TEMP TABLE profiles AS
    SELECT customer_id,
           CASE WHEN timezone IN (SELECT name FROM pg_timezone_names()) THEN timezone END
               AS timezone,
           signup_at::TIMESTAMPTZ AS signup_at
    FROM profile_input
    QUALIFY row_number() OVER (PARTITION BY customer_id) = 1;
"""


def age_days(earlier: str, later: str = "s.snapshot_ts") -> str:
    """SQL for the days from `earlier` to `later` as a double (null when either is null)."""
    return f"((epoch_us({later}) - epoch_us({earlier})) / {DAY_US}.0)"


def _count(name: str, event_type: str, lo: int, hi: int) -> str:
    """Events of a type with age in [lo, hi) days, i.e. timestamp in (t − hi, t − lo]."""
    return f"count(*) FILTER (event_type = '{event_type}' AND age >= {lo} AND age < {hi}) AS {name}"


def _sum(name: str, event_type: str, lo: int, hi: int) -> str:
    return (
        f"coalesce(sum(amount) FILTER (event_type = '{event_type}' AND age >= {lo} "
        f"AND age < {hi}), 0) AS {name}"
    )


def _decayed(name: str, event_type: str, half_life_days: float) -> str:
    """Σ 0.5^(age / half-life) over the events of a type in the 365-day window."""
    return (
        f"coalesce(sum(pow(0.5, age / {half_life_days!r})) FILTER (event_type = '{event_type}'),"
        f" 0) AS {name}"
    )


_WINDOW_AGGREGATES = [
    *(_count(f"purchases_{d}d", PURCHASE, 0, d) for d in (7, 30, 90, 180, 365)),
    *(_sum(f"spend_{d}d", PURCHASE, 0, d) for d in (7, 30, 90, 180, 365)),
    _count("sessions_7d", SESSION, 0, 7),
    _count("sessions_30d", SESSION, 0, 30),
    _count("sessions_prev_30d", SESSION, 30, 60),
    _count("cart_abandons_30d", CART_ABANDONED, 0, 30),
    _count("cart_abandons_90d", CART_ABANDONED, 0, 90),
    _count("refunds_90d", REFUND, 0, 90),
    _count("refunds_365d", REFUND, 0, 365),
    _sum("refund_amount_365d", REFUND, 0, 365),
    *(_count(f"emails_sent_{d}d", EMAIL_SENT, 0, d) for d in (7, 30, 90)),
    *(_count(f"emails_opened_{d}d", EMAIL_OPENED, 0, d) for d in (30, 90)),
    *(_count(f"emails_clicked_{d}d", EMAIL_CLICKED, 0, d) for d in (30, 90)),
    _count("emails_bounced_90d", EMAIL_BOUNCED, 0, 90),
]


def _window_stats_sql(half_life_days: float) -> str:
    """One pass over the events of the last 365 days before each snapshot.

    `age` is in days, so the window (t − w, t] is ``0 <= age < w``; the join condition is the
    point-in-time guarantee.
    """
    aggregates = [
        *_WINDOW_AGGREGATES,
        *(
            _decayed(f"{name}_decayed", event_type, half_life_days)
            for name, event_type in (
                ("emails_sent", EMAIL_SENT),
                ("emails_opened", EMAIL_OPENED),
                ("emails_clicked", EMAIL_CLICKED),
            )
        ),
    ]
    return _WINDOW_STATS_TEMPLATE.format(aggregates=",\n       ".join(aggregates))


_WINDOW_STATS_TEMPLATE = f"""
SELECT customer_id, snapshot_ts,
       {{aggregates}}
FROM (
    SELECT e.customer_id, e.event_type, e.amount, s.snapshot_ts, {age_days("e.ts")} AS age
    FROM events e
    JOIN snapshots s
      ON e.ts <= s.snapshot_ts AND e.ts > s.snapshot_ts - INTERVAL {LONGEST_WINDOW_DAYS} DAY
)
GROUP BY customer_id, snapshot_ts
"""

# All purchases up to each snapshot (no lower bound): totals, inter-purchase gaps, and per UTC
# day sums for the BG/NBD and Gamma-Gamma summaries. A purchase's gap is to the purchase before
# it, so it is known as soon as the purchase is.
_purchase_stats_sql = f"""
WITH purchases AS (
    SELECT customer_id, ts, coalesce(amount, 0) AS amount,
           {age_days("lag(ts) OVER (PARTITION BY customer_id ORDER BY ts)", "ts")} AS gap_days
    FROM events WHERE event_type = '{PURCHASE}'
),
seen AS (
    SELECT p.*, s.snapshot_ts FROM purchases p JOIN snapshots s ON p.ts <= s.snapshot_ts
),
per_order AS (
    SELECT customer_id, snapshot_ts,
           count(*) AS purchases_total,
           sum(amount) AS spend_total,
           max(amount) AS max_order_value,
           min(ts) AS first_purchase_ts,
           max(ts) AS last_purchase_ts,
           avg(gap_days) AS ipt_mean_days,
           stddev_samp(gap_days) AS ipt_std_days
    FROM seen GROUP BY customer_id, snapshot_ts
),
per_day AS (
    SELECT customer_id, snapshot_ts, date_trunc('day', ts) AS day, sum(amount) AS day_spend
    FROM seen GROUP BY customer_id, snapshot_ts, day
),
days AS (
    SELECT customer_id, snapshot_ts,
           count(*) - 1 AS bgnbd_x,
           min(day) AS first_day,
           max(day) AS last_day,
           sum(day_spend) - arg_min(day_spend, day) AS repeat_day_spend
    FROM per_day GROUP BY customer_id, snapshot_ts
)
SELECT o.*, d.bgnbd_x, d.first_day, d.last_day, d.repeat_day_spend
FROM per_order o JOIN days d USING (customer_id, snapshot_ts)
"""

_ASOF_TYPES = {
    "last_session_ts": SESSION,
    "last_email_ts": EMAIL_SENT,
    "last_open_ts": EMAIL_OPENED,
    "last_unsubscribe_ts": UNSUBSCRIBED,
}


def _asof(column: str, event_type: str) -> str:
    alias = f"a_{column}"
    return (
        f"ASOF LEFT JOIN (SELECT customer_id, ts AS {column} FROM events "
        f"WHERE event_type = '{event_type}') {alias} "
        f"ON p.customer_id = {alias}.customer_id AND p.snapshot_ts >= {alias}.{column}"
    )


# The latest event of each kind at or before the snapshot, however long ago (ASOF joins).
_last_seen_sql = f"""
SELECT p.customer_id, p.snapshot_ts, {", ".join(_ASOF_TYPES)}
FROM population p
{chr(10).join(_asof(column, event_type) for column, event_type in _ASOF_TYPES.items())}
"""

"""The feature tables and labels the model definitions declare, computed in DuckDB.

A definition's own view (`features.catalog`) holds its label's history, per-event-type groups
and property features; its label is the count (classification) or the summed value
(regression) of the label's events in (t, t + H], filtered by its ``where`` — the trigger
operators translated to SQL over ``amount`` and ``properties.<key>`` (JSON in the lake). Each is
one aggregate query per view over the events joined to the snapshots, so a definition costs a
query, not a Python loop per customer. Point in time as everywhere: features see
``timestamp <= t``, labels ``t < timestamp <= t + H``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

import pandas as pd

from features.catalog import CustomColumn, catalog
from features.compute.workspace import Workspace, age_days, conform
from features.schema import ENTITY_KEY, TIMESTAMP_COLUMN

if TYPE_CHECKING:
    from models.definitions import Definitions, ModelDefinition

__all__ = [
    "DEFINITION_EVENTS",
    "custom_view_table",
    "definition_event_types",
    "definition_labels",
    "needs_properties",
    "where_sql",
]

# Kinds computed over all history up to the snapshot; the others over their window.
_UNBOUNDED: Final = frozenset({"label_days_since", "event_days_since", "prop_last"})
# The temp table of the events the definitions read, properties included.
DEFINITION_EVENTS: Final = "definition_events"


def definition_event_types(definitions: Iterable[ModelDefinition]) -> set[str]:
    """Every event type any of the definitions reads."""
    return set().union(*(d.event_types() for d in definitions))


def needs_properties(definitions: Iterable[ModelDefinition]) -> bool:
    """Whether any definition reads event properties (then the lake's JSON column is read)."""
    return any(d.properties() for d in definitions)


def prepare(ws: Workspace, event_types: Iterable[str]) -> None:
    """Create `DEFINITION_EVENTS` in the workspace (once): the raw events of `event_types`."""
    if DEFINITION_EVENTS in ws._built:
        return
    types = sorted(set(event_types)) or ["\0"]
    listed = ", ".join(_literal(t) for t in types)
    properties = "properties" if ws.has_properties else "NULL::VARCHAR"
    ws.con.execute(
        f"""CREATE TEMP TABLE {DEFINITION_EVENTS} AS
        SELECT customer_id::VARCHAR AS customer_id, event_type, timestamp::TIMESTAMPTZ AS ts,
               amount::DOUBLE AS amount, {properties} AS properties
        FROM raw_events WHERE event_type IN ({listed})"""
    )
    ws._built.add(DEFINITION_EVENTS)


def custom_view_table(ws: Workspace, view: str, definitions: Definitions) -> pd.DataFrame:
    """A definition's own view at every snapshot: one row per (customer, snapshot)."""
    found = catalog(definitions)
    columns = found.custom[view]
    prepare(ws, definition_event_types(definitions))
    windowed = [c for c in columns if c.kind not in _UNBOUNDED]
    unbounded = [c for c in columns if c not in windowed]
    longest = max((int(c.params["window"]) for c in windowed), default=1)
    window_sql = ",\n       ".join(_window_aggregate(c) for c in windowed) or "NULL AS _none"
    ever_sql = ",\n       ".join(_ever_aggregate(c) for c in unbounded) or "NULL AS _none"
    select = ",\n           ".join(
        f"coalesce(w.{_ident(c.name)}, 0) AS {_ident(c.name)}"
        if c.dtype == "int64" or c.kind in {"event_sum", "label_value"}
        else f"{'w' if c in windowed else 'a'}.{_ident(c.name)} AS {_ident(c.name)}"
        for c in columns
    )
    frame = ws.df(f"""
        WITH windowed AS (
            SELECT customer_id, snapshot_ts,
               {window_sql}
            FROM (
                SELECT e.*, s.snapshot_ts, {age_days("e.ts")} AS age
                FROM {DEFINITION_EVENTS} e
                JOIN snapshots s ON e.ts <= s.snapshot_ts
                 AND e.ts > s.snapshot_ts - INTERVAL {longest} DAY
            ) GROUP BY customer_id, snapshot_ts
        ),
        ever AS (
            SELECT e.customer_id, s.snapshot_ts,
               {ever_sql}
            FROM {DEFINITION_EVENTS} e JOIN snapshots s ON e.ts <= s.snapshot_ts
            GROUP BY e.customer_id, s.snapshot_ts
        )
        SELECT p.customer_id, p.snapshot_ts AS event_timestamp,
           {select}
        FROM population p
        LEFT JOIN windowed w ON w.customer_id = p.customer_id AND w.snapshot_ts = p.snapshot_ts
        LEFT JOIN ever a ON a.customer_id = p.customer_id AND a.snapshot_ts = p.snapshot_ts
        """)
    return conform(frame, found.views[view])


def definition_labels(
    ws: Workspace,
    definition: ModelDefinition,
    event_types: Iterable[str],
    horizon: timedelta | None = None,
) -> pd.DataFrame:
    """customer_id, event_timestamp, the label column, and ``label_events`` (the count of the
    label's events in (t, t + H]), for every (customer, snapshot) of the population."""
    prepare(ws, event_types)
    label = definition.label
    h = horizon if horizon is not None else label.horizon
    if h <= timedelta(0):
        raise ValueError(f"the label horizon must be positive (got {h})")
    condition = _label_condition(definition)
    value = _value_sql(label.value) if label.value else "0.0"
    table = ws.con.execute(
        f"""
        SELECT p.customer_id AS {ENTITY_KEY}, p.snapshot_ts AS {TIMESTAMP_COLUMN},
           count(e.ts) AS label_events,
           coalesce(sum({value}), 0)::DOUBLE AS label_value
        FROM population p
        LEFT JOIN {DEFINITION_EVENTS} e
          ON e.customer_id = p.customer_id
         AND e.ts > p.snapshot_ts
         AND e.ts <= p.snapshot_ts + to_microseconds($horizon_us)
         AND {condition}
        GROUP BY ALL
        """,
        {"horizon_us": h // timedelta(microseconds=1)},
    ).df()
    table[TIMESTAMP_COLUMN] = pd.to_datetime(table[TIMESTAMP_COLUMN], utc=True).dt.as_unit("us")
    if definition.task == "regression":
        table[label.column] = table["label_value"].astype("float64")
    elif label.absent:
        table[label.column] = (table["label_events"] == 0).astype("int64")
    else:
        table[label.column] = (table["label_events"] > 0).astype("int64")
    table["label_events"] = table["label_events"].astype("int64")
    out = table[[ENTITY_KEY, TIMESTAMP_COLUMN, label.column, "label_events"]]
    return out.sort_values([TIMESTAMP_COLUMN, ENTITY_KEY], ignore_index=True)


# -- SQL -----------------------------------------------------------------------------------------


def where_sql(where: Mapping[str, Any] | None) -> str:
    """The trigger operators of a label's ``where`` as a DuckDB condition over the event."""
    from engine.dsl.operators import compile_predicate

    parts = []
    for field, raw in (where or {}).items():
        predicate = compile_predicate(raw)
        for op, expected in predicate.tests:
            parts.append(_test_sql(field, op, expected))
    return " AND ".join(parts) if parts else "TRUE"


def _field_sql(field: str) -> str:
    if field == "amount":
        return "amount::VARCHAR"
    path = "$." + ".".join(f'"{p}"' for p in field.removeprefix("properties.").split("."))
    return f"json_extract_string(properties, {_literal(path)})"


def _number_sql(field: str) -> str:
    if field == "amount":
        return "amount"
    return f"TRY_CAST({_field_sql(field)} AS DOUBLE)"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equals_sql(field: str, expected: Any) -> str:
    if _is_number(expected):
        return f"({_number_sql(field)} = {float(expected)!r})"
    if isinstance(expected, bool):
        return f"({_field_sql(field)} = {_literal(json.dumps(expected))})"
    return f"({_field_sql(field)} = {_literal(str(expected))})"


def _test_sql(field: str, op: str, expected: Any) -> str:
    text, number = _field_sql(field), _number_sql(field)
    compare = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
    if op == "equals":
        return _equals_sql(field, expected)
    if op == "not_equals":
        return f"({text} IS NULL OR NOT {_equals_sql(field, expected)})"
    if op in compare:
        if _is_number(expected):
            return f"({number} {compare[op]} {float(expected)!r})"
        return f"({text} {compare[op]} {_literal(str(expected))})"
    if op == "between":
        low, high = expected
        return f"({_test_sql(field, 'gte', low)} AND {_test_sql(field, 'lte', high)})"
    if op in {"in", "not_in"}:
        any_of = " OR ".join(_equals_sql(field, v) for v in expected) or "FALSE"
        return f"({any_of})" if op == "in" else f"({text} IS NULL OR NOT ({any_of}))"
    if op in {"contains", "not_contains"}:
        test = f"contains({text}, {_literal(str(expected))})"
        return f"coalesce({test}, FALSE)" if op == "contains" else f"NOT coalesce({test}, FALSE)"
    if op == "starts_with":
        return f"coalesce(starts_with({text}, {_literal(expected)}), FALSE)"
    if op == "ends_with":
        return f"coalesce(suffix({text}, {_literal(expected)}), FALSE)"
    if op == "matches":
        return f"coalesce(regexp_matches({text}, {_literal(expected.pattern)}), FALSE)"
    if op in {"exists", "not_exists"}:
        present = bool(expected) == (op == "exists")
        return f"({text} IS {'NOT ' if present else ''}NULL)"
    raise ValueError(f"operator {op!r} is not supported in a label's where")


def _value_sql(value: str) -> str:
    return f"coalesce({_number_sql(value)}, 0.0)"


def _events_in(events: Iterable[str]) -> str:
    return f"event_type IN ({', '.join(_literal(e) for e in events)})"


def _label_condition(definition: ModelDefinition) -> str:
    label = definition.label
    return f"({_events_in(label.event)} AND {where_sql(label.where)})"


def _window_aggregate(column: CustomColumn) -> str:
    p, name = column.params, _ident(column.name)
    window = f"age < {int(p['window'])}"
    if column.kind.startswith("label_"):
        events = f"{_events_in(p['events'])} AND {where_sql(p['where'])}"
    else:
        events = _events_in(p["events"])
    within = f"{events} AND {window}"
    kind = column.kind
    if kind in {"label_count", "event_count"}:
        return f"count(*) FILTER ({within}) AS {name}"
    if kind == "label_value":
        return f"coalesce(sum({_value_sql(p['value'])}) FILTER ({within}), 0) AS {name}"
    if kind == "event_sum":
        return f"coalesce(sum(amount) FILTER ({within}), 0) AS {name}"
    if kind == "event_mean":
        return f"avg(amount) FILTER ({within}) AS {name}"
    if kind == "event_max":
        return f"max(amount) FILTER ({within}) AS {name}"
    prop = _field_sql("properties." + p["property"])
    if kind == "prop_share":
        equal = _equals_sql("properties." + p["property"], p["share"])
        hits = f"count(*) FILTER ({within} AND {equal})"
        return f"{hits} / nullif(count(*) FILTER ({within}), 0) AS {name}"
    if kind == "prop_distinct":
        return f"count(DISTINCT {prop}) FILTER ({within}) AS {name}"
    raise ValueError(f"no windowed SQL for {kind}")


def _ever_aggregate(column: CustomColumn) -> str:
    p, name = column.params, _ident(column.name)
    if column.kind == "label_days_since":
        events = f"{_events_in(p['events'])} AND {where_sql(p['where'])}"
        latest = f"max(e.ts) FILTER ({events})"
        return f"{age_days(latest)} AS {name}"
    if column.kind == "event_days_since":
        latest = f"max(e.ts) FILTER ({_events_in(p['events'])})"
        return f"{age_days(latest)} AS {name}"
    if column.kind == "prop_last":
        number = _number_sql("properties." + p["property"])
        events = _events_in(p["events"])
        return f"arg_max({number}, e.ts) FILTER ({events} AND {number} IS NOT NULL) AS {name}"
    raise ValueError(f"no SQL for {column.kind}")


def _literal(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'

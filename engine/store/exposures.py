"""Reading experiments out of the execution log, for `engine.optimizer` (which never reads the store).

`load_exposures` selects, in SQL, what one trigger's experiment needs — its decisions with an
experiment variant and when their events occurred, its planned emails, the email-stage and
purchase events and the profiles of the customers it assigned — and hands them to the pure
`engine.optimizer.exposures.exposures_from_log`. Functions over a `Connection`.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.events import event_amount, is_machine_engagement
from engine.optimizer.exposures import EMAIL_STAGES, exposures_from_log
from engine.store.schema import actions, decisions, inbox, profiles

__all__ = ["experiment_triggers", "load_exposures"]

PURCHASE = "purchase_completed"
DECISION_COLUMNS = ["event_id", "customer_id", "trigger_id", "variant", "occurred_at"]
ACTION_COLUMNS = ["event_id", "trigger_id", "idempotency_key", "kind", "status"]
EVENT_COLUMNS = ["customer_id", "event_type", "occurred_at", "message_id", "amount"]


def experiment_triggers(conn: Connection) -> list[str]:
    """Triggers that have experiment decisions in the log, by id."""
    query = (
        sa.select(decisions.c.trigger_id)
        .where(decisions.c.variant.is_not(None))
        .distinct()
        .order_by(decisions.c.trigger_id)
    )
    return list(conn.execute(query).scalars())


def load_exposures(
    conn: Connection,
    trigger_id: str,
    *,
    attribution_window: float,
    segment_by: str | None = None,
    include_machine: bool = False,
) -> pd.DataFrame:
    """The exposures of one trigger's experiment (empty if it has none); see
    `engine.optimizer.exposures` for what a row says. `segment_by`: the profile attribute that
    names each customer's segment (else every customer is in ``all``). Opens and clicks flagged
    ``properties.machine`` (image proxies, link scanners) count only with `include_machine`."""
    assigned = _assigned(trigger_id)
    decided = pd.DataFrame(
        conn.execute(
            sa.select(
                decisions.c.event_id, decisions.c.customer_id, decisions.c.trigger_id,
                decisions.c.variant, inbox.c.occurred_at,
            )
            .select_from(decisions.outerjoin(inbox, inbox.c.event_id == decisions.c.event_id))
            .where(decisions.c.trigger_id == trigger_id, decisions.c.variant.is_not(None))
            .order_by(decisions.c.id)
        ).all(),
        columns=DECISION_COLUMNS,
    )  # fmt: skip
    if decided.empty:
        return pd.DataFrame()
    decided["occurred_at"] = decided["occurred_at"].astype("float64")
    emails = pd.DataFrame(
        conn.execute(
            sa.select(*(actions.c[c] for c in ACTION_COLUMNS))
            .where(actions.c.trigger_id == trigger_id, actions.c.kind == "send_email")
            .order_by(actions.c.id)
        ).all(),
        columns=ACTION_COLUMNS,
    )
    rows = (_event_row(*row, include_machine=include_machine) for row in conn.execute(
            sa.select(inbox.c.customer_id, inbox.c.event_type, inbox.c.occurred_at, inbox.c.payload)
            .where(inbox.c.customer_id.in_(assigned), inbox.c.event_type.in_([*EMAIL_STAGES, PURCHASE]))
            .order_by(inbox.c.customer_id, inbox.c.occurred_at, inbox.c.seq)
    ))  # fmt: skip
    events = pd.DataFrame([row for row in rows if row is not None], columns=EVENT_COLUMNS)
    segments = _segments(conn, assigned, segment_by) if segment_by else None
    return exposures_from_log(
        decided, emails, events, attribution_window=attribution_window, segments=segments
    )


def _assigned(trigger_id: str) -> sa.Select[Any]:
    """The customers that the trigger's experiment assigned a variant (a subquery)."""
    return sa.select(decisions.c.customer_id).where(
        decisions.c.trigger_id == trigger_id, decisions.c.variant.is_not(None)
    )


def _event_row(
    customer_id: str, event_type: str, occurred_at: float, payload: str, *, include_machine: bool
) -> tuple[Any, ...] | None:
    properties = json.loads(payload).get("properties") or {}
    if not include_machine and is_machine_engagement(event_type, properties):
        return None
    amount = event_amount(properties) or 0.0
    return customer_id, event_type, occurred_at, properties.get("message_id"), amount


def _segments(conn: Connection, customers: sa.Select[Any], attribute: str) -> dict[str, str]:
    query = sa.select(profiles.c.customer_id, profiles.c.data).where(
        profiles.c.customer_id.in_(customers)
    )
    out = {}
    for customer, data in conn.execute(query):
        value = json.loads(data).get(attribute)
        if value is not None:
            out[customer] = str(value)
    return out

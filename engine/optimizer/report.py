"""The performance of every trigger: what it decided, sent, what became of the messages, what
customers bought afterwards, and — where a holdout exists — what the trigger added.

Pure: counts and frames from the store (`engine.store.reporting`) in, frozen rows out.
``nudge triggers report``, ``nudge status`` and the optimize flow's MLflow metrics all read
these rows, so the terminal and MLflow show the same figures.

Attribution: a fire *converts* when its customer buys within the attribution window after the
triggering event; a purchase's amount counts once per trigger however many of its fires it
follows. Incrementality is the holdout analysis (`engine.optimizer.holdout`): every send arm
pooled against the holdout, intent-to-treat, with the lift's CI scaled to the arm's users.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from engine.optimizer.holdout import holdout_incrementality
from engine.optimizer.labels import ALL_SENDS, HOLDOUT

__all__ = [
    "FEEDBACK",
    "Incrementality",
    "TriggerPerformance",
    "attributed_conversions",
    "feedback_counts",
    "incrementality",
    "trigger_performance",
]

FEEDBACK: dict[str, str] = {
    "email_delivered": "delivered",
    "email_bounced": "bounced",
    "email_complained": "complained",
    "unsubscribed": "unsubscribed",
    "email_opened": "opened",
    "email_clicked": "clicked",
}
"""The feedback event of each figure of the report (``properties.message_id`` names the message)."""


@dataclass(frozen=True, slots=True)
class Incrementality:
    """What the trigger's sends added over its holdout on one outcome (``conversion``: customers
    converted; ``revenue``: money), with the (1 − alpha) CI and the test's p-value."""

    outcome: str
    users_sent: int
    users_holdout: int
    rate_sent: float
    rate_holdout: float
    abs_lift: float
    abs_ci_low: float
    abs_ci_high: float
    incremental: float
    incremental_ci_low: float
    incremental_ci_high: float
    p_value: float


@dataclass(frozen=True, slots=True)
class TriggerPerformance:
    """One trigger over the report's period.

    ``decisions``: outcome → count (fired, suppressed, skipped, held_out, failed);
    ``suppressed``: reason → count; ``sent``: channel → messages sent (``failed`` and
    ``pending`` likewise); ``feedback``: figure → {"human": n, "machine": n} of distinct sent
    messages (a message with a human event counts as human; machine only if every event said
    ``machine``); ``converted``: fires followed by a purchase within the window; ``revenue``:
    those purchases' amounts; ``incrementality``: per outcome, or empty without a holdout.
    """

    trigger_id: str
    decisions: dict[str, int]
    suppressed: dict[str, int]
    sent: dict[str, int]
    failed: dict[str, int]
    pending: dict[str, int]
    feedback: dict[str, dict[str, int]]
    converted: int
    revenue: float
    incrementality: tuple[Incrementality, ...] = field(default=())

    @property
    def fired(self) -> int:
        return self.decisions.get("fired", 0)

    @property
    def messages(self) -> int:
        return sum(self.sent.values())

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``nudge triggers report --json`` (one trigger)."""
        return {
            "trigger_id": self.trigger_id,
            "fired": self.fired,
            "decisions": dict(sorted(self.decisions.items())),
            "suppressed": dict(sorted(self.suppressed.items())),
            "sent": self.messages,
            "sent_by_channel": dict(sorted(self.sent.items())),
            "failed_by_channel": dict(sorted(self.failed.items())),
            "pending_by_channel": dict(sorted(self.pending.items())),
            **{name: dict(self.feedback.get(name, {"human": 0, "machine": 0}))
               for name in FEEDBACK.values()},
            "converted": self.converted,
            "revenue": round(self.revenue, 2),
            "incrementality": [_finite(i) for i in self.incrementality] or None,
        }  # fmt: skip


def trigger_performance(
    *,
    decisions: Mapping[tuple[str, str], int],
    suppressions: Mapping[tuple[str, str], int],
    actions: Mapping[tuple[str, str, str | None, str], int],
    messages: Mapping[str, str],
    feedback: pd.DataFrame,
    fires: pd.DataFrame,
    purchases: pd.DataFrame,
    window: float,
    holdouts: Mapping[str, tuple[Incrementality, ...]] | None = None,
    triggers: tuple[str, ...] = (),
) -> list[TriggerPerformance]:
    """One row per trigger (every trigger with decisions, plus `triggers`), by id.

    The inputs are those of `engine.store.reporting`: decision and suppression counts,
    action counts per (trigger, kind, channel, status), sent message id → trigger, the feedback
    events, the fired decisions and the purchases; `window` in seconds; `holdouts` what
    `incrementality` found per trigger.
    """
    ids = sorted({t for t, _ in decisions} | {t for t, *_ in actions} | set(triggers))
    counted = feedback_counts(feedback, messages)
    converted, revenue = attributed_conversions(fires, purchases, window)
    rows = []
    for trigger in ids:
        by_status: dict[str, dict[str, int]] = {"sent": {}, "failed": {}, "pending": {}}
        for (t, _kind, channel, status), n in actions.items():
            if t != trigger or channel is None:
                continue
            bucket = by_status.get(
                "pending" if status in {"pending", "claimed", "sending"} else status
            )
            if bucket is not None:
                bucket[channel] = bucket.get(channel, 0) + n
        rows.append(
            TriggerPerformance(
                trigger_id=trigger,
                decisions={o: n for (t, o), n in decisions.items() if t == trigger},
                suppressed={r: n for (t, r), n in suppressions.items() if t == trigger},
                sent=by_status["sent"],
                failed=by_status["failed"],
                pending=by_status["pending"],
                feedback=counted.get(trigger, {}),
                converted=converted.get(trigger, 0),
                revenue=revenue.get(trigger, 0.0),
                incrementality=(holdouts or {}).get(trigger, ()),
            )
        )
    return rows


def feedback_counts(
    events: pd.DataFrame, messages: Mapping[str, str]
) -> dict[str, dict[str, dict[str, int]]]:
    """trigger → figure → {"human", "machine"}: distinct sent messages per feedback figure.

    `events`: event_type, message_id, machine; `messages`: message id → trigger. Events naming
    no sent message (another system's mail, a message outside the period) are left out.
    """
    out: dict[str, dict[str, dict[str, int]]] = {}
    if events.empty:
        return out
    known = events[events["message_id"].isin(list(messages)) & events["event_type"].isin(FEEDBACK)]
    if known.empty:
        return out
    human = (
        known.assign(human=~known["machine"].astype(bool))
        .groupby(["event_type", "message_id"])["human"]
        .any()
        .reset_index()
    )
    human["trigger_id"] = human["message_id"].map(messages)
    for (trigger, event_type, is_human), n in (
        human.groupby(["trigger_id", "event_type", "human"]).size().items()
    ):
        figure = out.setdefault(trigger, {}).setdefault(
            FEEDBACK[event_type], {"human": 0, "machine": 0}
        )
        figure["human" if is_human else "machine"] += int(n)
    return out


def attributed_conversions(
    fires: pd.DataFrame, purchases: pd.DataFrame, window: float
) -> tuple[dict[str, int], dict[str, float]]:
    """Per trigger: fires with a purchase in (fired at, fired at + window], and the amounts of
    the purchases that follow at least one of its fires within the window (each once)."""
    if fires.empty or purchases.empty:
        return {}, {}
    joined = (
        fires.reset_index(names="fire")
        .merge(purchases.reset_index(names="purchase").rename(columns={"occurred_at": "bought_at"}),
               on="customer_id")
    )  # fmt: skip
    inside = joined[
        (joined["bought_at"] > joined["occurred_at"])
        & (joined["bought_at"] <= joined["occurred_at"] + window)
    ]
    converted = inside.drop_duplicates("fire").groupby("trigger_id").size()
    revenue = (
        inside.drop_duplicates(["trigger_id", "purchase"]).groupby("trigger_id")["amount"].sum()
    )
    return (
        {str(t): int(n) for t, n in converted.items()},
        {str(t): float(v) for t, v in revenue.items()},
    )


def incrementality(exposures: pd.DataFrame, alpha: float = 0.05) -> tuple[Incrementality, ...]:
    """Every send arm pooled against the holdout, on conversion and revenue (empty when the
    exposures have no holdout or no send arm): the holdout analysis's ``ALL_SENDS`` rows."""
    if exposures.empty or not (exposures["variant"] == HOLDOUT).any():
        return ()
    if not (exposures["variant"] != HOLDOUT).any():
        return ()
    table = holdout_incrementality(exposures, alpha=alpha)
    pooled = table[table["variant"] == ALL_SENDS]
    held = exposures["variant"] == HOLDOUT
    out = []
    for row in pooled.itertuples(index=False):
        column = "converted" if row.outcome == "conversion" else "revenue"
        values = exposures[column].astype(float)
        out.append(
            Incrementality(
                outcome=str(row.outcome),
                users_sent=int(row.users),
                users_holdout=int(held.sum()),
                rate_sent=float(np.mean(values[~held])),
                rate_holdout=float(np.mean(values[held])),
                abs_lift=float(row.abs_lift),
                abs_ci_low=float(row.abs_ci_low),
                abs_ci_high=float(row.abs_ci_high),
                incremental=float(row.incremental_total),
                incremental_ci_low=float(row.incremental_ci_low),
                incremental_ci_high=float(row.incremental_ci_high),
                p_value=float(row.p_value),
            )
        )
    return tuple(out)


def _finite(item: Incrementality) -> dict[str, Any]:
    """The fields as JSON values: NaN (a test that cannot be computed) becomes null."""
    values: dict[str, Any] = {}
    for f in fields(Incrementality):
        value = getattr(item, f.name)
        values[f.name] = None if isinstance(value, float) and not math.isfinite(value) else value
    return values

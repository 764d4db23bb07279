"""Predictive triggers (issue 16): absence timers and scheduled-audience runs.

- ``timers``: one durable timer per (then_absent trigger, first event), in the customer's bucket;
- ``schedule_runs``: each (schedule trigger, zone, cron time, worker share) with its resume cursor;
- ``actions_by_customer``: the dispatcher's frequency caps at due time count a customer's sends
  (without it every marketing batch scans the actions: ~0.5 s per batch at 200,000 rows).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("actions_by_customer", "actions", ["customer_id", "status"])
    op.create_table(
        "timers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("trigger_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("started_at", sa.Double, nullable=False),
        sa.Column("due_at", sa.Double, nullable=False),
        sa.Column("absent_event", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("bucket", sa.Integer, nullable=False, server_default="0"),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("outcome", sa.Text),
        sa.Column("finished_at", sa.Double),
        sa.UniqueConstraint("trigger_id", "event_id", name="timers_once_per_event"),
    )
    op.create_index("timers_due", "timers", ["status", "due_at"])
    op.create_index("timers_by_customer", "timers", ["customer_id"])
    op.create_table(
        "schedule_runs",
        sa.Column("trigger_id", sa.String(64), primary_key=True),
        sa.Column("zone", sa.String(64), primary_key=True),
        sa.Column("occurrence", sa.Double, primary_key=True),
        sa.Column("worker", sa.String(16), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cursor", sa.String(128), nullable=False, server_default=""),
        sa.Column("customers", sa.Integer, nullable=False, server_default="0"),
        sa.Column("fired", sa.Integer, nullable=False, server_default="0"),
        sa.Column("started_at", sa.Double, nullable=False),
        sa.Column("finished_at", sa.Double),
    )


def downgrade() -> None:
    op.drop_table("schedule_runs")
    op.drop_index("timers_by_customer", table_name="timers")
    op.drop_index("timers_due", table_name="timers")
    op.drop_table("timers")
    op.drop_index("actions_by_customer", table_name="actions")

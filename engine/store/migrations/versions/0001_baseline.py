"""The baseline: the engine's tables as the first releases created them (metadata.create_all).

A database made by those releases has these tables and no alembic_version table; `nudge db
upgrade` recognises it, stamps it at this revision and upgrades it from here, so nothing is lost.
The definitions are a frozen copy: later changes to engine/store/schema.py go in later revisions.

Revision ID: 0001
Revises:
Create Date: 2026-03-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbox",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(128), nullable=False, unique=True),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("occurred_at", sa.Double, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("received_at", sa.Double, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("processed_at", sa.Double),
        sa.Column("bucket", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("inbox_pending", "inbox", ["status", "seq"])
    op.create_index("inbox_by_customer", "inbox", ["customer_id", "occurred_at"])
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("trigger_id", sa.String(64), nullable=False),
        sa.Column("trigger_version", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("trace", sa.Text),
        sa.Column("scores", sa.Text),
        sa.Column("variant", sa.String(64)),
        sa.Column("decided_at", sa.Double, nullable=False),
        sa.UniqueConstraint("event_id", "trigger_id", name="decisions_once_per_event"),
    )
    op.create_index("decisions_by_trigger", "decisions", ["trigger_id", "outcome"])
    op.create_index("decisions_by_customer", "decisions", ["customer_id"])
    op.create_table(
        "actions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("idempotency_key", sa.String(300), nullable=False, unique=True),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("trigger_id", sa.String(64), nullable=False),
        sa.Column("action_index", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("channel", sa.String(32)),
        sa.Column("due_at", sa.Double, nullable=False),
        sa.Column("cancel_if", sa.Text),
        sa.Column("variant", sa.String(64)),
        sa.Column("trigger_at", sa.Double, nullable=False, server_default="0"),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.Double, nullable=False, server_default="0"),
        sa.Column("claimed_by", sa.String(64)),
        sa.Column("claimed_at", sa.Double),
        sa.Column("finished_at", sa.Double),
        sa.Column("result", sa.Text),
    )
    op.create_index("actions_due", "actions", ["status", "due_at"])
    op.create_table(
        "segments",
        sa.Column("customer_id", sa.String(128), primary_key=True),
        sa.Column("segment", sa.String(128), primary_key=True),
        sa.Column("added_at", sa.Double, nullable=False),
        sa.Column("source_action", sa.String(300)),
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("idempotency_key", sa.String(300), nullable=False, unique=True),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("trigger_id", sa.String(64), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="open"),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(128)),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("redriven_at", sa.Double),
    )
    op.create_table(
        "customer_state",
        sa.Column("customer_id", sa.String(128), primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )
    op.create_table(
        "profiles",
        sa.Column("customer_id", sa.String(128), primary_key=True),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )


def downgrade() -> None:
    for table in ("profiles", "customer_state", "dead_letters", "tasks", "segments", "actions",
                  "decisions", "inbox"):  # fmt: skip
        op.drop_table(table)

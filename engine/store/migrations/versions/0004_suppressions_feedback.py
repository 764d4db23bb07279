"""Feedback from email providers (issue 14): the suppression list by address, Message-IDs, flags.

- ``suppressed_addresses`` (from 0003, erased customers' hashes) gains what bounces, complaints and
  manual entries need: the address itself (not for erased ones), ``until`` (a temporary
  suspension after soft bounces), the soft-bounce count in a row, a detail and the last update;
- ``message_ids``: the Message-ID of each email sent → its action, for providers' webhooks;
- ``provider_events``: provider event ids already applied (a retried webhook counts once);
- ``engine_flags``: switches that survive restarts (the deliverability guard's marketing pause).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("suppressed_addresses") as batch:
        batch.add_column(sa.Column("address", sa.String(320)))
        batch.add_column(sa.Column("until", sa.Double))
        batch.add_column(sa.Column("soft_bounces", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("detail", sa.String(300)))
        batch.add_column(sa.Column("updated_at", sa.Double))
    op.create_index("suppressed_by_address", "suppressed_addresses", ["address"])
    op.create_table(
        "message_ids",
        sa.Column("message_id", sa.String(255), primary_key=True),
        sa.Column("action_id", sa.Integer, nullable=False),
        sa.Column("recorded_at", sa.Double, nullable=False),
    )
    op.create_table(
        "provider_events",
        sa.Column("event_key", sa.String(200), primary_key=True),
        sa.Column("received_at", sa.Double, nullable=False),
    )
    op.create_table(
        "engine_flags",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("set_at", sa.Double, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("engine_flags")
    op.drop_table("provider_events")
    op.drop_table("message_ids")
    op.drop_index("suppressed_by_address", table_name="suppressed_addresses")
    with op.batch_alter_table("suppressed_addresses") as batch:
        for column in ("updated_at", "detail", "soft_bounces", "until", "address"):
            batch.drop_column(column)

"""Engine → lake (issue 15): a per-event "in the lake" marker instead of a time window.

- ``inbox.lake_synced``: false until the lake sync has copied the event (engine.store.lake_sync).
  PostgreSQL gives a seq at insert but shows the row at commit, so a seq watermark alone skips
  an event whose transaction commits after a later one's; a marker per row cannot.
  Events up to the old ``events`` watermark are marked as copied; the rest are copied by the
  next sync (the lake's append is idempotent by event_id, so one copied twice counts once).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inbox") as batch:
        batch.add_column(
            sa.Column("lake_synced", sa.Boolean, nullable=False, server_default=sa.false())
        )
    op.create_index("inbox_lake_pending", "inbox", ["lake_synced", "seq"])
    op.execute(
        "UPDATE inbox SET lake_synced = TRUE WHERE seq <= "
        "(SELECT COALESCE(MAX(position), 0) FROM lake_watermarks WHERE stream = 'events')"
    )


def downgrade() -> None:
    op.drop_index("inbox_lake_pending", "inbox")
    with op.batch_alter_table("inbox") as batch:
        batch.drop_column("lake_synced")

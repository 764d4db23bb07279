"""Send rates: one row per channel holding the shared GCRA state of its send rate (issue 13).

`engine.store.send_rates` reads and moves a channel's `tat` (theoretical arrival time) with one
conditional UPDATE, so that every dispatcher worker on the database shares one rate.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "send_rates",
        sa.Column("channel", sa.String(32), primary_key=True),
        sa.Column("tat", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("send_rates")

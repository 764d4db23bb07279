"""Live data in and out (issue 15): identity links, the engine → lake watermarks, erasure records.

- ``identities``: an anonymousId (or alias previousId) → the customer it belongs to
  (engine.store.identity);
- ``lake_watermarks``: how far the engine → lake sync has gone, per stream (engine.store.lake_sync);
- ``suppressed_addresses``: salted hashes of erased customers' addresses, never mailed again;
- ``erasures``: the audit of each erasure (when, whose hash, what was removed).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "identities",
        sa.Column("anonymous_id", sa.String(128), primary_key=True),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("linked_at", sa.Double, nullable=False),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("message_id", sa.String(128)),
    )
    op.create_index("identities_by_customer", "identities", ["customer_id"])
    op.create_table(
        "lake_watermarks",
        sa.Column("stream", sa.String(32), primary_key=True),
        sa.Column("position", sa.Double, nullable=False),
        sa.Column("synced", sa.Integer, nullable=False, server_default="0"),
        sa.Column("updated_at", sa.Double, nullable=False),
    )
    op.create_table(
        "suppressed_addresses",
        sa.Column("address_hash", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("added_at", sa.Double, nullable=False),
    )
    op.create_table(
        "erasures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("customer_hash", sa.String(64), nullable=False),
        sa.Column("requested_by", sa.String(64), nullable=False),
        sa.Column("erased_at", sa.Double, nullable=False),
        sa.Column("removed", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("erasures")
    op.drop_table("suppressed_addresses")
    op.drop_table("lake_watermarks")
    op.drop_index("identities_by_customer", table_name="identities")
    op.drop_table("identities")

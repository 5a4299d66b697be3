"""a partial index for a destination's dead letters, newest first

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 16:00:00

Dead letters to one destination were found by walking every dead letter newest first: all
100,000 of them for a destination with none (0.23 s on PostgreSQL, up to 0.9 s on SQLite
from a cold cache, measured on a million events). Only deliveries that die pay for it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Written out, not imported: a migration keeps the values it was written with.
DEAD = sa.text("state = 'dead'")


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_dead_destination",
        "deliveries",
        ["destination", "id"],
        sqlite_where=DEAD,
        postgresql_where=DEAD,
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_dead_destination", table_name="deliveries")

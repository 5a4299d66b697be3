"""partial indexes for the console's and the admin API's filters on a million events

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 15:00:00

Each holds only the rows a filter has to find among many (tables.py says which), so the
common insert, a succeeded event applied and delivered, pays for none of them.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Written out, not imported: a migration keeps the values it was written with.
UNUSUAL_TYPE = sa.text("type <> 'generation.succeeded'")
UNUSUAL_OUTCOME = sa.text("outcome <> 'applied'")
DEAD = sa.text("state = 'dead'")


def upgrade() -> None:
    for name, table, columns, where in (
        ("ix_events_type_received_at", "events", ["type", "received_at"], UNUSUAL_TYPE),
        ("ix_events_outcome_received_at", "events", ["outcome", "received_at"], UNUSUAL_OUTCOME),
        ("ix_deliveries_dead", "deliveries", ["state", "id"], DEAD),
    ):
        op.create_index(name, table, columns, sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    op.drop_index("ix_deliveries_dead", table_name="deliveries")
    op.drop_index("ix_events_outcome_received_at", table_name="events")
    op.drop_index("ix_events_type_received_at", table_name="events")

"""keep only the event indexes that queries use: every index is paid for on each insert

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 03:05:00
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Listings and filters go by received_at; by-task and by-outcome lookups are rare
    # operator queries that a scan serves, and ingest writes every row.
    op.drop_index("ix_events_task_id", table_name="events")
    op.drop_index("ix_events_outcome", table_name="events")
    op.drop_index("ix_events_type_received_at", table_name="events")


def downgrade() -> None:
    op.create_index("ix_events_type_received_at", "events", ["type", "received_at"])
    op.create_index("ix_events_outcome", "events", ["outcome"])
    op.create_index("ix_events_task_id", "events", ["task_id"])

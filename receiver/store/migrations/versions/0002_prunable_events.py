"""events can be pruned while records keep their last event's ID

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 02:10:00
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # records.last_event_id stays as a reference that may outlive its event (retention).
    with op.batch_alter_table("records") as batch:
        batch.drop_constraint("fk_records_last_event_id_events", type_="foreignkey")
    op.create_index("ix_events_outcome", "events", ["outcome"])
    op.create_index("ix_events_type_received_at", "events", ["type", "received_at"])


def downgrade() -> None:
    op.drop_index("ix_events_type_received_at", table_name="events")
    op.drop_index("ix_events_outcome", table_name="events")
    with op.batch_alter_table("records") as batch:
        batch.create_foreign_key(
            "fk_records_last_event_id_events", "events", ["last_event_id"], ["id"]
        )

"""records can be registered before Rivya reports on them, and reconciled with its API;
the last credit balance read is kept

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 13:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.alter_column("updated_at", existing_type=sa.DateTime(timezone=True), nullable=True)
        batch.alter_column("last_event_id", existing_type=sa.Text, nullable=True)
        batch.add_column(sa.Column("reference", sa.Text))
        batch.add_column(sa.Column("registered_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("reconciled_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("reconcile_state", sa.Text))
    op.create_index("ix_records_reference", "records", ["reference"])
    op.create_index("ix_records_changed_at", "records", ["changed_at"])
    op.create_index("ix_records_status_changed_at", "records", ["status", "changed_at"])
    op.create_table(
        "rivya_credits",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("current_credits", sa.BigInteger, nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rivya_credits"),
    )


def downgrade() -> None:
    # The previous version knows records only from events: a registered task Rivya has not
    # reported on yet has neither, and goes.
    op.execute(sa.text("DELETE FROM records WHERE updated_at IS NULL OR last_event_id IS NULL"))
    op.drop_table("rivya_credits")
    op.drop_index("ix_records_status_changed_at", table_name="records")
    op.drop_index("ix_records_changed_at", table_name="records")
    op.drop_index("ix_records_reference", table_name="records")
    with op.batch_alter_table("records") as batch:
        batch.drop_column("reconcile_state")
        batch.drop_column("reconciled_at")
        batch.drop_column("registered_at")
        batch.drop_column("reference")
        batch.alter_column("last_event_id", existing_type=sa.Text, nullable=False)
        batch.alter_column("updated_at", existing_type=sa.DateTime(timezone=True), nullable=False)

"""deliveries name their destination; each destination's health is kept

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 10:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Before destinations, every delivery went to RECEIVER_FORWARD_URL, which is now `default`.
DEFAULT = "default"


def upgrade() -> None:
    op.add_column(
        "deliveries",
        sa.Column("destination", sa.Text, nullable=False, server_default=DEFAULT),
    )
    # The default only fills the rows already there: every new row names its destination.
    with op.batch_alter_table("deliveries") as batch:
        batch.alter_column("destination", server_default=None)
    op.create_index(
        "ix_deliveries_destination_state_next_attempt_at",
        "deliveries",
        ["destination", "state", "next_attempt_at"],
    )
    op.create_table(
        "destination_health",
        sa.Column("destination", sa.Text, nullable=False),
        sa.Column("last_success_at", sa.DateTime(timezone=True)),
        sa.Column("last_failure_at", sa.DateTime(timezone=True)),
        sa.Column("consecutive_failures", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("destination", name="pk_destination_health"),
    )


def downgrade() -> None:
    # The previous version knows one downstream: deliveries to any other destination, and
    # their attempts, go (they would otherwise be sent to the wrong subscriber).
    op.execute(
        sa.text(
            "DELETE FROM attempts WHERE delivery_id IN"
            " (SELECT id FROM deliveries WHERE destination != :name)"
        ).bindparams(name=DEFAULT)
    )
    op.execute(
        sa.text("DELETE FROM deliveries WHERE destination != :name").bindparams(name=DEFAULT)
    )
    op.drop_table("destination_health")
    op.drop_index("ix_deliveries_destination_state_next_attempt_at", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("destination")

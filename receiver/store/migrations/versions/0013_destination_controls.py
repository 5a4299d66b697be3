"""destinations disabled (by a 410 Gone, or by hand), and the configuration last applied

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 03:00:00

Two new tables; nothing existing changes.
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "disabled_destinations",
        sa.Column("destination", sa.Text, nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_by", sa.Text, nullable=False),
        sa.Column("reason", sa.Text),
        sa.PrimaryKeyConstraint("destination", name="pk_disabled_destinations"),
    )
    op.create_table(
        "applied_destinations",
        sa.Column("destination", sa.Text, nullable=False),
        sa.Column("description", sa.JSON, nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("destination", name="pk_applied_destinations"),
    )


def downgrade() -> None:
    op.drop_table("applied_destinations")
    op.drop_table("disabled_destinations")

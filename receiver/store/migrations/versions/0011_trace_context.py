"""events keep the W3C trace context of the span that stored them; a replay's deliveries,
their own

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 21:00:00

Nullable columns without a default: adding them rewrites no row on either backend, and
events stored before (or untraced) simply start their deliveries' traces afresh.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("traceparent", sa.Text))
        batch.add_column(sa.Column("tracestate", sa.Text))
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("traceparent", sa.Text))


def downgrade() -> None:
    # SQLite's own DROP COLUMN (3.35 and later), not batch mode's copy of the table: the copy
    # drops `events`, which the deliveries' foreign key refuses once rows exist.
    with op.batch_alter_table("deliveries", recreate="never") as batch:
        batch.drop_column("traceparent")
    with op.batch_alter_table("events", recreate="never") as batch:
        batch.drop_column("tracestate")
        batch.drop_column("traceparent")

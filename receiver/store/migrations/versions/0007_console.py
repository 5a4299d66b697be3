"""the console: sessions, and the indexes its pages read by

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 14:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # 0003 dropped it as no query used it; a record's page now lists its events.
    op.create_index("ix_events_task_id", "events", ["task_id"])
    op.create_index("ix_attempts_attempted_at", "attempts", ["attempted_at"])
    op.create_table(
        "console_sessions",
        sa.Column("id_hash", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("token_fingerprint", sa.Text, nullable=False),
        sa.Column("csrf_token", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id_hash", name="pk_console_sessions"),
    )
    op.create_index("ix_console_sessions_expires_at", "console_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_console_sessions_expires_at", table_name="console_sessions")
    op.drop_table("console_sessions")
    op.drop_index("ix_attempts_attempted_at", table_name="attempts")
    op.drop_index("ix_events_task_id", table_name="events")

"""on PostgreSQL, tell listening forwarders when deliveries are queued

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 05:45:00
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The channel receiver.forward.forwarder listens on.
CHANNEL = "receiver_deliveries"


def upgrade() -> None:
    # A trigger rather than a NOTIFY in the code: it covers every way a delivery is queued
    # (ingest, replays from the CLI or the admin API), and is delivered only on commit.
    # Once per statement, so a batch of a hundred events wakes each forwarder once. Retries
    # that come due later, and claims released by a stopping forwarder, are found by
    # polling, as on SQLite.
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"""
        CREATE FUNCTION receiver_notify_deliveries() RETURNS trigger AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', '');
            RETURN NULL;
        END;
        $$ LANGUAGE plpgsql
        """
    )
    op.execute(
        """
        CREATE TRIGGER deliveries_queued AFTER INSERT
        ON deliveries FOR EACH STATEMENT EXECUTE FUNCTION receiver_notify_deliveries()
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER deliveries_queued ON deliveries")
    op.execute("DROP FUNCTION receiver_notify_deliveries()")

"""dead letters that were replayed or recovered leave `dead`

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 18:00:00

`dead` now means "needs action". A pair (event, destination, target URL) that was delivered
after it died is `recovered`; a dead letter of a pair queued again since is `replayed`. The
stored rows are settled by the same rule the service now applies as it goes: each a single
statement over the dead letters, found by the partial index on them, each pair's other
deliveries by the event_id index.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# Written out, not imported: a migration keeps the values it was written with.
DEAD = "dead"
REPLAYED = "replayed"
RECOVERED = "recovered"
DELIVERED = "delivered"

deliveries = sa.table(
    "deliveries",
    sa.column("id", sa.BigInteger),
    sa.column("event_id", sa.Text),
    sa.column("destination", sa.Text),
    sa.column("target_url", sa.Text),
    sa.column("state", sa.Text),
)


def upgrade() -> None:
    later = deliveries.alias("later")
    op.execute(
        sa.update(deliveries)
        .where(
            deliveries.c.state == DEAD,
            sa.exists().where(
                later.c.event_id == deliveries.c.event_id,
                later.c.destination == deliveries.c.destination,
                later.c.target_url.is_not_distinct_from(deliveries.c.target_url),
                later.c.id > deliveries.c.id,
            ),
        )
        .values(state=REPLAYED)
    )
    done = deliveries.alias("done")
    op.execute(
        sa.update(deliveries)
        .where(
            deliveries.c.state.in_([DEAD, REPLAYED]),
            sa.exists().where(
                done.c.event_id == deliveries.c.event_id,
                done.c.destination == deliveries.c.destination,
                done.c.target_url.is_not_distinct_from(deliveries.c.target_url),
                done.c.state == DELIVERED,
            ),
        )
        .values(state=RECOVERED)
    )


def downgrade() -> None:
    op.execute(
        sa.update(deliveries)
        .where(deliveries.c.state.in_([REPLAYED, RECOVERED]))
        .values(state=DEAD)
    )

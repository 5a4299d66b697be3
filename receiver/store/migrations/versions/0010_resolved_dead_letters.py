"""dead letters that were replayed or recovered leave `dead`

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 18:00:00

`dead` now means "needs action". A dead (or replayed) letter whose pair (event, destination,
target URL) has a delivery that was delivered when or after it died is `recovered`; a dead
letter with a newer delivery of its pair is `replayed`. The stored rows are settled by the
same rule the service now applies as it goes (it settles at the moment a delivery finishes,
so "delivered after it died" is what it sees then): each a single statement over the dead
letters, found by the partial index on them, each pair's other deliveries by the event_id
index.
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
    sa.column("finished_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
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
                done.c.finished_at >= deliveries.c.finished_at,
            ),
        )
        .values(state=RECOVERED)
    )
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


def downgrade() -> None:
    op.execute(
        sa.update(deliveries)
        .where(deliveries.c.state.in_([REPLAYED, RECOVERED]))
        .values(state=DEAD)
    )

"""The last messages sent to people about operational events, for the console's overview.

Only the newest NOTIFICATIONS_KEPT are kept: the overview shows the last few, and the events
themselves (stored like Rivya's) are the history. Each row says whether the message went out:
to how many of the notification URLs, and how many refused it after every try.
"""

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from receiver.store.tables import notifications

# Ten times what the overview shows: room for an outage's burst of messages while the
# overview still has its ten, and a table that never grows past a few kilobytes.
NOTIFICATIONS_KEPT = 100


async def record_notification(
    connection: AsyncConnection,
    event_id: str,
    event_type: str,
    title: str,
    sent_at: datetime,
    delivered: int,
    failed: int,
) -> None:
    """Add one row and remove those older than the newest NOTIFICATIONS_KEPT."""
    await connection.execute(
        notifications.insert().values(
            event_id=event_id,
            type=event_type,
            title=title,
            sent_at=sent_at,
            delivered=delivered,
            failed=failed,
        )
    )
    # By ID, the order rows were added in: two replicas' clocks may disagree on sent_at.
    oldest_kept = (
        sa.select(notifications.c.id)
        .order_by(notifications.c.id.desc())
        .offset(NOTIFICATIONS_KEPT - 1)
        .limit(1)
        .scalar_subquery()
    )
    await connection.execute(notifications.delete().where(notifications.c.id < oldest_kept))


async def last_notifications(connection: AsyncConnection, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` rows, newest first, times in ISO 8601."""
    rows = await connection.execute(
        sa.select(notifications).order_by(notifications.c.id.desc()).limit(limit)
    )
    return [
        {
            "event_id": row.event_id,
            "type": row.type,
            "title": row.title,
            "sent_at": row.sent_at.isoformat(timespec="seconds"),
            "delivered": row.delivered,
            "failed": row.failed,
        }
        for row in rows
    ]

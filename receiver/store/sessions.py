"""Console sessions, kept in the database so that every replica knows them and sign-out ends
one everywhere. Only a hash of each session's ID is stored."""

import hashlib
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from receiver.store.tables import console_sessions


@dataclass(frozen=True, slots=True)
class StoredSession:
    role: str
    token_fingerprint: str
    csrf_token: str
    expires_at: datetime


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


async def save_session(
    connection: AsyncConnection, session_id: str, session: StoredSession, now: datetime
) -> None:
    # Expired sessions go as new ones come: the table holds the signed-in, no more.
    await connection.execute(sa.delete(console_sessions).where(console_sessions.c.expires_at < now))
    await connection.execute(
        sa.insert(console_sessions).values(
            id_hash=_hash(session_id),
            role=session.role,
            token_fingerprint=session.token_fingerprint,
            csrf_token=session.csrf_token,
            created_at=now,
            expires_at=session.expires_at,
        )
    )


async def find_session(
    connection: AsyncConnection, session_id: str, now: datetime
) -> StoredSession | None:
    row = (
        await connection.execute(
            sa.select(
                console_sessions.c.role,
                console_sessions.c.token_fingerprint,
                console_sessions.c.csrf_token,
                console_sessions.c.expires_at,
            ).where(
                console_sessions.c.id_hash == _hash(session_id),
                console_sessions.c.expires_at > now,
            )
        )
    ).first()
    return None if row is None else StoredSession(*row)


async def end_session(connection: AsyncConnection, session_id: str) -> None:
    await connection.execute(
        sa.delete(console_sessions).where(console_sessions.c.id_hash == _hash(session_id))
    )

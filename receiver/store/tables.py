"""The schema, in SQLAlchemy Core, shared by SQLite and PostgreSQL.

events      every authentic delivery, raw body byte for byte; `id` is the dedup key
records     one row per Rivya generation (task ID): the product's view of it
deliveries  the outbox: one row per forward of an event to one destination
attempts    one row per HTTP attempt of a delivery
destination_health  per destination: when it last took or refused an attempt
rivya_credits  the last credit balance read from Rivya's API
console_sessions  who is signed in to the console, until when
conditions  the operational conditions raised and not yet ended (receiver.operational)
notifications  the last messages sent to people about them, and whether they went out
disabled_destinations  destinations that start no attempt: a 410 Gone, or an operator
applied_destinations  each destination as a serving process last applied it (no secrets)
"""

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from receiver.model import Outcome

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on every backend.

    SQLite keeps no zone, so values are stored as naive UTC and compare as text in order.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """On SQLite, straight to the text SQLAlchemy's own DATETIME would store (it always
        writes the microseconds). Its format-string chain cost about 15 us a value, six
        values an event on the ingest path (measured), where `isoformat` costs a tenth."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            naive = self.process_bind_param(value, dialect)
            return None if naive is None else naive.isoformat(" ", "microseconds")

        return process

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite only autoincrements an INTEGER PRIMARY KEY.
BigID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# Most events are of this type and have this outcome. The indexes for filtering by type and
# by outcome hold only the other rows (those a filter has to find among a million), so the
# common ones, nearly every insert, pay nothing for them.
COMMON_TYPE = "generation.succeeded"
COMMON_OUTCOME = Outcome.APPLIED.value


def partial_index(name: str, *columns: str, where: str) -> sa.Index:
    """An index of only the rows `where` holds for, on both backends."""
    return sa.Index(name, *columns, sqlite_where=sa.text(where), postgresql_where=sa.text(where))


events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("webhook_id", sa.Text, nullable=False),
    sa.Column("type", sa.Text),
    sa.Column("api_version", sa.Text),
    sa.Column("created_at", UTCDateTime),
    sa.Column("received_at", UTCDateTime, nullable=False, index=True),
    sa.Column("task_id", sa.Text),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("quarantine_reason", sa.Text),
    sa.Column("body", sa.LargeBinary, nullable=False),
    # The W3C trace context of the span that stored the event (receiver.tracing.carriers):
    # its deliveries' attempts are that span's children. NULL when stored untraced.
    sa.Column("traceparent", sa.Text),
    sa.Column("tracestate", sa.Text),
    # A record's history on the console: its events, found without a scan.
    sa.Index("ix_events_task_id", "task_id"),
    partial_index(
        "ix_events_type_received_at", "type", "received_at", where=f"type <> '{COMMON_TYPE}'"
    ),
    partial_index(
        "ix_events_outcome_received_at",
        "outcome",
        "received_at",
        where=f"outcome <> '{COMMON_OUTCOME}'",
    ),
)

# What a generation sets on its record (webhooks and reconciliation alike); registration and
# reconciliation keep the rest.
GENERATION_COLUMNS = (
    "task_id",
    "status",
    "model",
    "reserved_credits",
    "final_credits",
    "result_urls",
    "error_code",
    "error_message",
    "updated_at",
    "last_event_id",
    "changed_at",
)
records = sa.Table(
    "records",
    metadata,
    sa.Column("task_id", sa.Text, primary_key=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("model", sa.Text),
    sa.Column("reserved_credits", sa.BigInteger),
    sa.Column("final_credits", sa.BigInteger),
    sa.Column("result_urls", sa.JSON, nullable=False),
    sa.Column("error_code", sa.Text),
    sa.Column("error_message", sa.Text),
    # Rivya's time for the generation; none yet for a task only registered.
    sa.Column("updated_at", UTCDateTime),
    # No foreign key: the record outlives its events when retention prunes them. None
    # while no event has touched it (registered, or changed only by reconciliation).
    sa.Column("last_event_id", sa.Text),
    sa.Column("changed_at", UTCDateTime, nullable=False),
    # The product's own key for the task, given when it registers it.
    sa.Column("reference", sa.Text, index=True),
    sa.Column("registered_at", UTCDateTime),
    # When reconciliation last asked Rivya about it, and what came of that.
    sa.Column("reconciled_at", UTCDateTime),
    sa.Column("reconcile_state", sa.Text),
    # Listings page by when records changed, in all and by status (reconciliation's scan).
    sa.Index("ix_records_changed_at", "changed_at"),
    sa.Index("ix_records_status_changed_at", "status", "changed_at"),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", BigID, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.Text, sa.ForeignKey("events.id"), nullable=False, index=True),
    # A name from the configuration; one no longer configured leaves its rows orphaned.
    sa.Column("destination", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    # A replay to another endpoint names it here; NULL means the destination's URL.
    sa.Column("target_url", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("lease_owner", sa.Text),
    sa.Column("lease_expires_at", UTCDateTime),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("last_status_code", sa.Integer),
    sa.Column("last_error", sa.Text),
    # A replay's own trace context: its attempts start there, linked to the event's. NULL
    # for the event's first deliveries, whose attempts are children of its ingest span.
    sa.Column("traceparent", sa.Text),
    sa.Index("ix_deliveries_state_next_attempt_at", "state", "next_attempt_at"),
    # Claims are taken per destination, in order of when they come due.
    sa.Index(
        "ix_deliveries_destination_state_next_attempt_at", "destination", "state", "next_attempt_at"
    ),
    # Dead letters newest first (the console's default list) without sorting every dead
    # one; only deliveries that die pay for it.
    partial_index("ix_deliveries_dead", "state", "id", where="state = 'dead'"),
    # A destination's dead letters newest first, without walking every other one's.
    partial_index("ix_deliveries_dead_destination", "destination", "id", where="state = 'dead'"),
)

attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("id", BigID, primary_key=True, autoincrement=True),
    sa.Column("delivery_id", BigID, sa.ForeignKey("deliveries.id"), nullable=False, index=True),
    # The console's chart of delivery outcomes by hour reads a day of attempts by it.
    sa.Column("attempted_at", UTCDateTime, nullable=False, index=True),
    sa.Column("duration_ms", sa.Float, nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("error_class", sa.Text),
)

destination_health = sa.Table(
    "destination_health",
    metadata,
    sa.Column("destination", sa.Text, primary_key=True),
    sa.Column("last_success_at", UTCDateTime),
    sa.Column("last_failure_at", UTCDateTime),
    # Failed attempts since the last one that succeeded.
    sa.Column("consecutive_failures", sa.Integer, nullable=False),
)

# The last balance reconciliation read from Rivya: one row, id 1.
rivya_credits = sa.Table(
    "rivya_credits",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("current_credits", sa.BigInteger, nullable=False),
    sa.Column("read_at", UTCDateTime, nullable=False),
)

# Signed-in console sessions. The cookie holds the ID, signed; a row is what sign-out ends.
console_sessions = sa.Table(
    "console_sessions",
    metadata,
    # SHA-256 of the session's ID: the database never holds a usable cookie.
    sa.Column("id_hash", sa.Text, primary_key=True),
    sa.Column("role", sa.Text, nullable=False),
    # Which token signed it in (a fingerprint): a changed token ends its sessions.
    sa.Column("token_fingerprint", sa.Text, nullable=False),
    sa.Column("csrf_token", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False, index=True),
)


# Operational conditions in progress, one row each (receiver.operational): the insert that
# raises one and the delete that ends it decide, in the database, which replica raises or
# ends it, so each is raised and ended once. A destination's window of dead letters being
# gathered into one event is a row too, counting them until the window closes.
conditions = sa.Table(
    "conditions",
    metadata,
    # What it is about: `backlog:billing`, `credits`, `dead:billing`.
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("started_at", UTCDateTime, nullable=False),
    # Dead letters in the window so far (0 for every other condition).
    sa.Column("count", sa.BigInteger, nullable=False, server_default="0"),
    # What the ending event repeats of the raising one (Rivya's code for a refused key), or
    # a window's first dead delivery's ID, where its first dead letters are looked for.
    sa.Column("detail", sa.Text),
)

# The last messages sent to people about operational events, newest kept (NOTIFICATIONS_KEPT).
notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", BigID, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("sent_at", UTCDateTime, nullable=False),
    # How many of RECEIVER_NOTIFY_URLS took it, and how many did not after every try.
    sa.Column("delivered", sa.Integer, nullable=False),
    sa.Column("failed", sa.Integer, nullable=False),
)

# A destination with a row here starts no attempt, in any process, until an operator enables
# it: it answered 410 Gone (`disabled_by` "410"), or an operator disabled it. Its pending
# deliveries wait, shown as disabled.
disabled_destinations = sa.Table(
    "disabled_destinations",
    metadata,
    sa.Column("destination", sa.Text, primary_key=True),
    sa.Column("disabled_at", UTCDateTime, nullable=False),
    # "410", or who did it as the audit log names them ("cli:<user>", "console:admin").
    sa.Column("disabled_by", sa.Text, nullable=False),
    sa.Column("reason", sa.Text),
)

# What `receiver destinations reload` compares a file with: each destination as the last
# process to start or reload applied it, described without secrets (their fingerprints).
applied_destinations = sa.Table(
    "applied_destinations",
    metadata,
    sa.Column("destination", sa.Text, primary_key=True),
    sa.Column("description", sa.JSON, nullable=False),
    sa.Column("applied_at", UTCDateTime, nullable=False),
)

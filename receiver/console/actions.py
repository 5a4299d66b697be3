"""What an administrator can do from the console: replay one event, replay by filter (after
a dry run and a confirmation), replay a destination's dead letters and reprocess quarantined
events (each after a confirmation showing the count), reconcile one task. Each goes through
the same actions as the CLI and writes the same audit line, who = `console`, and answers
with a redirect whose notice says what it did, in numbers (`notices`)."""

from dataclasses import replace
from datetime import datetime
from urllib.parse import unquote

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from receiver.console.access import Session
from receiver.console.forms import field, session_and_form
from receiver.console.notices import Counts, answer_to, replayed_counts, reprocessed_counts
from receiver.console.pages import ReplayQuery, read_pin, read_query
from receiver.console.recovery import DEAD_LETTERS, QUARANTINED, configured_destination
from receiver.console.rendering import page_of
from receiver.exceptions import NotFoundError, RejectedRequestError
from receiver.operators import actions, replays
from receiver.reconcile.reconciler import Reconciler
from receiver.services import Services, services_of
from receiver.store.database import transaction
from receiver.store.filters import EventFilter
from receiver.store.pages import MAX_ID
from receiver.store.queries import get_record

WHO = "console"


def _back(session: Session, path: str, notice: str, counts: Counts = ()) -> Response:
    # The notice is one of this module's own words, never the request's text, signed for
    # the session that acted (`notices`); an ID in `path` is already encoded (`page_of`).
    return RedirectResponse(answer_to(session, path, notice, counts), status_code=303)


def _posted_id(form: FormData, name: str) -> str:
    """The ID a form names: encoded as a path segment is (`segment`), because a field's
    value is not carried exactly otherwise (a browser sends a lone LF as CRLF, and its HTML
    parser turns NUL into U+FFFD). No stored ID holds NUL, so one that does is not found."""
    value = form.get(name)
    if not isinstance(value, str) or not value:
        raise HTTPException(400, f"The form names no {name}.")
    try:
        found = unquote(value, errors="strict")
    except UnicodeDecodeError:
        raise HTTPException(400, f"The form's {name} cannot be read.") from None
    if "\x00" in found:
        raise HTTPException(404, "Nothing has that ID.")
    return found


async def _replay(
    services: Services, which: EventFilter, destination: str | None
) -> replays.Replayed:
    try:
        return await replays.replay_served(services, which, destination, WHO)
    except NotFoundError:
        raise HTTPException(404, "No such event.") from None
    except RejectedRequestError as exc:
        raise HTTPException(409, str(exc)) from exc


async def replay_event(request: Request) -> Response:
    session, form = await session_and_form(request)
    event_id = _posted_id(form, "event_id")
    which = EventFilter(event_ids=(event_id,))
    replayed = await _replay(services_of(request), which, field(form, "destination"))
    return _back(session, page_of(event_id, "event"), "replayed", replayed_counts(replayed))


async def replay_matching(request: Request) -> Response:
    """The confirmed second step of a replay by filter (the first is the replay page)."""
    session, form = await session_and_form(request)
    query = read_query(ReplayQuery, request, form)
    replayed = await _replay(services_of(request), query.event_filter(), query.destination)
    return _back(
        session, "/console/deliveries?state=pending", "replayed", replayed_counts(replayed)
    )


async def replay_destination(request: Request) -> Response:
    """The confirmed second step of "replay this destination's dead letters" (the first is
    `recovery.confirm_replay`): each it counted (up to its `up_to`, dead by its `dead_by`)
    is queued again to it alone. With a `delivery_id` (a dead letter's own Replay button),
    that one alone."""
    session, form = await session_and_form(request)
    name = configured_destination(request)
    services = services_of(request)
    delivery_id = _posted_number(form, "delivery_id")
    if delivery_id is not None:
        replayed = await replays.replay_dead_letter(services, name, delivery_id, WHO)
    else:
        up_to, dead_by = _posted_number(form, "up_to"), _posted_pin(form, "dead_by")
        which = replace(DEAD_LETTERS, up_to=up_to, dead_by=dead_by)
        replayed = await _replay(services, which, name)
    return _back(session, f"/console/destinations/{name}", "replayed", replayed_counts(replayed))


def _posted_number(form: FormData, name: str) -> int | None:
    """A delivery ID a form names, if it names one: digits, within a 64-bit column."""
    value = field(form, name)
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or not 0 < int(value) <= MAX_ID:
        raise HTTPException(400, f"The form's {name} is not a delivery ID.")
    return int(value)


def _posted_pin(form: FormData, name: str) -> datetime | None:
    """The instant a confirmation was counted at, if the form names one (`read_pin`)."""
    value = field(form, name)
    if value is None:
        return None
    try:
        return read_pin(value)
    except ValueError:
        raise HTTPException(
            400, f"The form's {name} is not an instant this console wrote."
        ) from None


async def reprocess_quarantined(request: Request) -> Response:
    """The confirmed second step of reprocessing (the first is `recovery.confirm_reprocess`)."""
    session, _ = await session_and_form(request)
    counts = await actions.reprocess_served(services_of(request), QUARANTINED, WHO)
    return _back(session, "/console/events", "reprocessed", reprocessed_counts(counts))


async def reconcile_task(request: Request) -> Response:
    session, form = await session_and_form(request)
    services = services_of(request)
    task_id = _posted_id(form, "task_id")
    if services.settings.rivya_api_key is None:
        raise HTTPException(
            409, "Asking Rivya is off: this service has no Rivya API key (RECEIVER_RIVYA_API_KEY)."
        )
    async with transaction(services.engine) as connection:
        try:
            await get_record(connection, task_id)
        except NotFoundError:
            raise HTTPException(404, "No such record.") from None
    async with Reconciler(
        services.engine,
        services.settings,
        on_stored=services.forwarder.wake if services.forwarder else None,
        tracing=services.tracing,
    ) as reconciler:
        report = await reconciler.run_pass(WHO, task_ids=[task_id])
    return _back(
        session,
        page_of(task_id, "record"),
        "reconciled" if report.result == "ok" else report.result,
    )

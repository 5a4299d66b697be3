"""Disabling and enabling a destination from the console: a confirmation (GET, a disable's
with a field for its reason), then the POST that does it through the same action as the CLI
and the admin API (`operators.destination_states`), audited who = `console`, answered with a
redirect to the destination's page whose notice says what it did, or that nothing changed."""

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from receiver.console.access import Session
from receiver.console.forms import field, session_and_form
from receiver.console.notices import answer_to
from receiver.console.recovery import destination_name
from receiver.console.rendering import page
from receiver.exceptions import InvalidRequestError
from receiver.operators.destination_states import checked_reason, switch_destination
from receiver.services import services_of
from receiver.store.destination_states import MAX_REASON_CHARS

WHO = "console"


def _configured(request: Request) -> str:
    """The destination a confirmation is for: one configured now (the CLI can still enable
    one that is not, while it is disabled)."""
    name = destination_name(request)
    if name not in {d.name for d in services_of(request).settings.forwarding}:
        raise HTTPException(404, "No configured destination has that name.")
    return name


async def confirm_disable(request: Request) -> Response:
    name = _configured(request)
    return _confirmation(
        request,
        name,
        "disable",
        f"No replica starts an attempt to {name} until it is enabled again; its pending"
        " deliveries wait, shown as disabled, and new events are still queued to it.",
        reason_chars=MAX_REASON_CHARS,
    )


async def confirm_enable(request: Request) -> Response:
    name = _configured(request)
    return _confirmation(
        request,
        name,
        "enable",
        f"Every replica sends {name} its pending deliveries again, oldest first.",
    )


def _confirmation(
    request: Request, name: str, action: str, sentence: str, reason_chars: int | None = None
) -> Response:
    return page(
        request,
        "confirm.html",
        title=f"{action.capitalize()} {name}",
        sentence=sentence,
        action=f"/console/destinations/{name}/{action}",
        reason_chars=reason_chars,
        button=f"{action.capitalize()} {name}",
        back=f"/console/destinations/{name}",
    )


async def disable(request: Request) -> Response:
    session, form = await session_and_form(request)
    return await _switch(request, session, False, checked_reason(field(form, "reason")))


async def enable(request: Request) -> Response:
    session, _ = await session_and_form(request)
    return await _switch(request, session, True, None)


async def _switch(request: Request, session: Session, enable: bool, reason: str | None) -> Response:
    name = destination_name(request)
    services = services_of(request)
    try:
        switched = await switch_destination(
            services.engine, services.settings.forwarding, name, enable, WHO, reason
        )
    except InvalidRequestError:
        # The reason was checked before: the only refusal left is the name.
        raise HTTPException(404, "No configured destination has that name.") from None
    done = ("enabled" if enable else "disabled") if switched.changed else "unchanged"
    path = f"/console/destinations/{name}"
    return RedirectResponse(answer_to(session, path, done), status_code=303)

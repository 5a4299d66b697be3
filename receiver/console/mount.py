"""The console at /console/: its routes, listed, behind its guard."""

from starlette.middleware import Middleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from receiver.console import actions, pages, pings, recovery
from receiver.console import destination_states as switches
from receiver.console.access import Tokens
from receiver.console.errors import CONSOLE_EXCEPTION_HANDLERS
from receiver.console.guard import ConsoleGuard, SecurityHeaders
from receiver.console.rendering import STATIC
from receiver.console.signin import SignIn, sign_out
from receiver.settings import Settings

CONSOLE_PATH = "/console"


def console_mount(settings: Settings) -> Mount:
    tokens = Tokens(settings)
    sign_in = SignIn(tokens)
    return Mount(
        CONSOLE_PATH,
        routes=[
            Route("/", pages.overview),
            Route("/login", sign_in.form, methods=["GET"]),
            Route("/login", sign_in.submit, methods=["POST"]),
            Route("/logout", sign_out, methods=["POST"]),
            Route("/failed", pages.failed_jobs),
            Route("/records", pages.records),
            # IDs are Rivya's, so any text: `path` takes one with a slash too (`segment`
            # encodes it as %2F; the path is decoded before routing). An ID made only of
            # dots is in the query of /record or /event instead (`page_of`), and an action's
            # ID travels in its form: a browser reads `%2E%2E` in a path as `..`.
            Route("/record", pages.record),
            Route("/records/reconcile", actions.reconcile_task, methods=["POST"]),
            Route("/records/{task_id:path}", pages.record),
            Route("/event", pages.event),
            Route("/events", pages.events),
            Route("/events/replay", actions.replay_event, methods=["POST"]),
            Route("/events/{event_id:path}", pages.event),
            Route("/deliveries", pages.deliveries),
            Route("/destinations/{name}", recovery.destination),
            Route("/destinations/{name}/replay", recovery.confirm_replay, methods=["GET"]),
            Route("/destinations/{name}/replay", actions.replay_destination, methods=["POST"]),
            Route("/destinations/{name}/ping", pings.ping_destination, methods=["POST"]),
            Route("/destinations/{name}/disable", switches.confirm_disable, methods=["GET"]),
            Route("/destinations/{name}/disable", switches.disable, methods=["POST"]),
            Route("/destinations/{name}/enable", switches.confirm_enable, methods=["GET"]),
            Route("/destinations/{name}/enable", switches.enable, methods=["POST"]),
            Route("/replay", recovery.replay, methods=["GET"]),
            Route("/replay", actions.replay_matching, methods=["POST"]),
            Route("/reprocess", recovery.confirm_reprocess, methods=["GET"]),
            Route("/reprocess", actions.reprocess_quarantined, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC)),
        ],
        # Outermost first. The console's own exception handlers answer every failure under
        # it (a route's, the guard's, an unknown address's) with a page; the app's, outside
        # the mount, keep /admin and the webhook in JSON.
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(ExceptionMiddleware, handlers=CONSOLE_EXCEPTION_HANDLERS),
            Middleware(ConsoleGuard, tokens=tokens),
        ],
    )

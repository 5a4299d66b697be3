"""A row removed under the forwarder: a real `receiver serve`, a real downstream that holds
its answer while the test deletes the delivery being attempted, on both backends."""

import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from receiver.store.tables import deliveries
from tests.conftest import Rivya
from tests.databases import reading
from tests.helpers import Downstream, Received, ReceiverProcess, make_event, wait_until

StartServer = Callable[..., ReceiverProcess]
StartDownstream = Callable[..., Downstream]
# Longer than the test needs to delete the row, shorter than the attempt's timeout (2 s).
HOLD_SECONDS = 1.5


def deliveries_of(sender: Rivya, event_id: str) -> list[tuple[str, int]]:
    """Each delivery's state, and how many attempts are on record for it."""
    found = sender.admin(f"/events/{event_id}").json()["deliveries"]
    return [(d["state"], len(d["attempt_log"])) for d in found]


def test_an_outcome_whose_delivery_was_deleted_is_dropped_and_forwarding_goes_on(
    start_server: StartServer, own_downstream: StartDownstream, rivya: Rivya
) -> None:
    doomed = make_event()
    deleted = threading.Event()

    def respond(request: Received, _: int) -> tuple[int, dict[str, Any]]:
        if request.headers.get("webhook-id") == doomed["id"]:
            deleted.wait(HOLD_SECONDS)
        return 200, {}

    downstream = own_downstream(respond)
    server = start_server(forward_url=downstream.url)
    sender = Rivya(server, rivya.secret, rivya.sensitive)
    assert sender.send(doomed).status_code == 200
    wait_until(lambda: bool(downstream.of(doomed["id"])), timeout=5)
    with reading(server.env["RECEIVER_DATABASE_URL"]) as db:
        gone = db.execute(sa.delete(deliveries).where(deliveries.c.event_id == doomed["id"]))
        db.commit()
    assert gone.rowcount == 1
    deleted.set()

    later = [make_event() for _ in range(3)]
    for event in later:
        assert sender.send(event).status_code == 200
    for event in later:

        def delivered(event_id: str = event["id"]) -> bool:
            return [state for state, _ in deliveries_of(sender, event_id)] == ["delivered"]

        wait_until(delivered, timeout=10)
        # Not one more: SQLite may give the deleted row's ID to a later delivery, which
        # must not take the dropped attempt.
        assert deliveries_of(sender, event["id"]) == [("delivered", 1)]
    assert server.output().count('"delivery_outcome_dropped"') == 1
    assert deliveries_of(sender, doomed["id"]) == []

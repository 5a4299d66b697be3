"""An outcome the database refuses for good (not a vanished row, not an absent database): a
real `receiver serve`, a real downstream, and a trigger that refuses one attempt's row, on
both backends."""

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from tests.conftest import Rivya
from tests.databases import reading
from tests.forward.test_vanished_rows import deliveries_of
from tests.helpers import Downstream, Received, ReceiverProcess, make_event, wait_until

StartServer = Callable[..., ReceiverProcess]
StartDownstream = Callable[..., Downstream]
# The answer the downstream gives the doomed event alone, and that the trigger refuses.
REFUSED_STATUS = 202
REFUSE = {
    "sqlite": [
        f"CREATE TRIGGER refuse_attempt BEFORE INSERT ON attempts "
        f"WHEN NEW.status_code = {REFUSED_STATUS} BEGIN SELECT RAISE(ABORT, 'refused'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_attempt() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'refused'; END $$",
        f"CREATE TRIGGER refuse_attempt BEFORE INSERT ON attempts FOR EACH ROW "
        f"WHEN (NEW.status_code = {REFUSED_STATUS}) EXECUTE FUNCTION refuse_attempt()",
    ],
}


def test_an_outcome_the_database_refuses_is_dropped_and_forwarding_goes_on(
    start_server: StartServer, own_downstream: StartDownstream, rivya: Rivya, backend: str
) -> None:
    doomed = make_event()

    def respond(request: Received, _: int) -> tuple[int, dict[str, Any]]:
        return (REFUSED_STATUS if request.headers.get("webhook-id") == doomed["id"] else 200), {}

    downstream = own_downstream(respond)
    server = start_server(forward_url=downstream.url)
    sender = Rivya(server, rivya.secret, rivya.sensitive)
    with reading(server.env["RECEIVER_DATABASE_URL"]) as db:
        for statement in REFUSE[backend]:
            db.execute(sa.text(statement))
        db.commit()
    assert sender.send(doomed).status_code == 200
    wait_until(lambda: bool(downstream.of(doomed["id"])), timeout=5)

    later = [make_event() for _ in range(3)]
    for event in later:
        assert sender.send(event).status_code == 200
    for event in later:

        def delivered(event_id: str = event["id"]) -> bool:
            return deliveries_of(sender, event_id) == [("delivered", 1)]

        wait_until(delivered, timeout=10)
    # Its delivery stays as it was (pending, leased): sent again when the lease expires.
    assert deliveries_of(sender, doomed["id"]) == [("pending", 0)]
    assert server.output().count('"delivery_outcome_dropped"') == 1

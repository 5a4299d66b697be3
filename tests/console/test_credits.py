"""Credits explained on the console, over HTTP against a real server: a record's page and
the failed-jobs list show reserved, final and returned, and label what Rivya has not
reported yet; the overview's credits table labels tasks with no model."""

from tests.conftest import Rivya
from tests.console.conftest import Browser
from tests.helpers import make_event


def _sent(rivya: Rivya, event_type: str, reserved: int | None, final: int | None) -> str:
    event = make_event(event_type)
    event["data"] |= {"reserved_credits": reserved, "final_credits": final}
    assert rivya.send(event).json()["status"] == "accepted"
    return str(event["data"]["id"])


def _admin(rivya: Rivya, browsers: list[Browser]) -> Browser:
    browsers.append(Browser(rivya.server.url))
    browsers[-1].sign_in()
    return browsers[-1]


def _number_cells(listing: str, task_id: str) -> list[str]:
    """The numeric cells of the failed list's row that links to `task_id`."""
    start = listing.index(f">{task_id}</a>")
    row = listing[listing.rindex("<tr>", 0, start) : listing.index("</tr>", start)]
    return [cell.split("</td>")[0] for cell in row.split('<td class="n">')[1:]]


def test_a_records_page_says_what_was_returned_or_that_it_is_not_reported_yet(
    rivya: Rivya, browsers: list[Browser]
) -> None:
    succeeded = _sent(rivya, "generation.succeeded", 120, 80)
    failed = _sent(rivya, "generation.failed", 120, 0)
    unreported = _sent(rivya, "generation.failed", 120, None)
    admin = _admin(rivya, browsers)

    def credits_of(task_id: str) -> str:
        page = admin.get(f"/console/records/{task_id}")
        assert page.status_code == 200
        return page.text.split("<dt>credits</dt><dd>")[1].split("</dd>")[0]

    assert credits_of(succeeded) == "reserved 120, final 80, 40 returned"
    assert credits_of(failed) == "reserved 120, final 0, 120 returned"
    assert credits_of(unreported) == "reserved 120, final not reported yet"


def test_the_failed_list_shows_reserved_final_and_returned_for_each_job(
    rivya: Rivya, browsers: list[Browser]
) -> None:
    refunded = _sent(rivya, "generation.failed", 120, 0)
    charged = _sent(rivya, "generation.failed", 120, 80)
    unreported = _sent(rivya, "generation.failed", None, None)
    admin = _admin(rivya, browsers)
    listing = admin.get("/console/failed").text
    assert "<th>returned</th>" in listing
    assert _number_cells(listing, refunded) == ["120", "0", "120 returned"]
    assert _number_cells(listing, charged) == ["120", "80", "40 returned"]
    assert _number_cells(listing, unreported) == ["not reported yet"] * 3


def test_the_overviews_credits_table_labels_tasks_with_no_model(
    rivya: Rivya, browsers: list[Browser]
) -> None:
    event = make_event()
    event["data"]["model"] = None
    assert rivya.send(event).json()["status"] == "accepted"
    overview = _admin(rivya, browsers).get("/console/").text
    table = overview.split("Credits by model")[1].split("</table>")[0]
    assert "<td>model not reported yet</td>" in table
    assert "<td>-</td>" not in table

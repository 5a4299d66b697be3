"""Where secrets could surface besides logs: the `.env` that `make run` writes, the admin
API's answers, and errors."""

import shutil
import stat
import subprocess
from pathlib import Path

from tests.conftest import ADMIN_TOKEN, Rivya
from tests.helpers import make_event

REPOSITORY = Path(__file__).parents[2]


def test_env_written_by_make_run_is_private_and_holds_fresh_secrets(tmp_path: Path) -> None:
    # The Makefile's own rule, in a scratch folder, with the project's installed venv.
    shutil.copy2(REPOSITORY / "Makefile", tmp_path / "Makefile")
    make = shutil.which("make")
    assert make
    venv = REPOSITORY / ".venv"
    for _ in range(2):
        subprocess.run(
            # -o: the venv is installed already; use it as it is.
            [make, "--silent", ".env", f"VENV={venv}", "-o", str(venv / ".runtime")],
            cwd=tmp_path,
            check=True,
            timeout=60,
        )
        env_file = tmp_path / ".env"
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        assert values["RECEIVER_SIGNING_SECRETS"].startswith("whsec_")
        assert len(values["RECEIVER_ADMIN_TOKEN"]) >= 32
        env_file.unlink()


def test_admin_answers_never_carry_a_secret(rivya: Rivya) -> None:
    event = make_event()
    rivya.send(event)
    answers = [
        rivya.admin("/events"),
        rivya.admin(f"/events/{event['id']}"),
        rivya.admin(f"/records/{event['data']['id']}"),
        rivya.admin("/deliveries"),
        rivya.admin("/stats"),
        rivya.admin("/events/evt_unknown"),
        rivya.admin("/events?received_after=not-a-date"),
        rivya.admin("/replay", method="POST", content=b"{not json"),
    ]
    assert {answer.status_code for answer in answers} >= {200, 400, 404}
    secrets = [ADMIN_TOKEN, *(value for value in rivya.sensitive.values if "whsec_" in value)]
    for answer in answers:
        assert [s for s in secrets if s in answer.text] == [], answer.request.url

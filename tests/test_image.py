"""What the container image runs, checked without a Docker engine: the Dockerfile's own
install script builds the wheel into a fresh virtual environment; then the image's
ENTRYPOINT and CMD start the service, and its HEALTHCHECK command passes."""

import json
import os
import signal
import subprocess
from pathlib import Path

from tests.helpers import HTTP, free_port, new_secret, wait_until

REPOSITORY = Path(__file__).parents[1]
IMAGE_PORT = "8000"


def instructions() -> dict[str, str]:
    """The Dockerfile's last instruction of each kind, continuation lines joined."""
    text = (REPOSITORY / "Dockerfile").read_text().replace("\\\n", " ")
    found: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            found[keyword] = rest.strip()
    return found


def test_the_image_command_serves_and_passes_its_health_check(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run(
        [str(REPOSITORY / "deploy" / "install-venv.sh"), str(venv)],
        check=True,
        timeout=600,
    )
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    )
    packages = {p["name"].lower() for p in json.loads(installed.stdout)}
    assert {"receiver", "uvicorn", "asyncpg"} <= packages
    assert not {"pytest", "mypy", "hypothesis"} & packages, "dev tools in the runtime"

    docker = instructions()
    entrypoint, command = json.loads(docker["ENTRYPOINT"]), json.loads(docker["CMD"])
    health = json.loads(docker["HEALTHCHECK"].partition(" CMD ")[2])
    assert entrypoint[:2] == ["receiver", "serve"]
    # The container listens on every interface of its own network namespace.
    assert entrypoint[entrypoint.index("--host") + 1] == "0.0.0.0"  # noqa: S104
    port = str(free_port())
    data = tmp_path / "data"
    data.mkdir()
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "RECEIVER_SIGNING_SECRETS": new_secret(),
        "RECEIVER_DATABASE_URL": f"sqlite+aiosqlite:///{data / 'receiver.db'}",
    }

    def health_check() -> int:
        argv = [arg.replace(IMAGE_PORT, port) for arg in health]
        return subprocess.run(argv, env=env, capture_output=True, timeout=10).returncode

    log = (tmp_path / "image.log").open("wb")
    server = subprocess.Popen(
        [*entrypoint, *(arg.replace(IMAGE_PORT, port) for arg in command)],
        env=env,
        cwd=data,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: health_check() == 0, timeout=30, what="the image's health check")
        assert HTTP.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
    assert "Application shutdown complete." in (tmp_path / "image.log").read_text()
    assert health_check() == 1

"""`make run` as a newcomer runs it, from a fresh copy of the repository (no `.venv`, no
`.env`): it installs the runtime dependencies only, says where the console and the admin
token are, and serves. Needs the package registry (pip's cache, if the environment names
one, is used)."""

import contextlib
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import TextIO

import httpx
import orjson
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import HTTP, free_port, wait_until

REPOSITORY = Path(__file__).parents[1]
# Installing from the registry is most of it: seconds from a cache or a nearby mirror, more
# from a slow one. The suite's own 120 s per test is too short for the slow case.
SERVES_WITHIN_SECONDS = 240
# What must not reach the environment the service runs from, besides the dev extra's names.
TOOLS = ("mypy", "pytest", "ruff", "selenium", "bandit", "pip-audit", "hadolint")
# Variables a surrounding `make` or virtualenv sets, which would change how the inner
# `make` and `python3` behave; and the service's own settings, so that only .env counts.
LEAKING = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH")


def fresh_copy(destination: Path) -> Path:
    """The files a clone would have, as they are in the working tree: the tracked ones, and
    any new one not yet added that git does not ignore (so never `.venv` or `.env`)."""
    git = shutil.which("git")
    assert git
    listed = subprocess.run(
        [git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPOSITORY,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPOSITORY / name
        if not os.path.lexists(source):  # deleted in the working tree, not yet in git
            continue
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination / name, follow_symlinks=False)
    return destination


def dev_tools() -> set[str]:
    """The dev extra's packages, by their canonical names."""
    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]
    dev = project["optional-dependencies"]["dev"]
    return {canonicalize_name(Requirement(r).name) for r in dev} | set(TOOLS)


def installed(venv: Path) -> set[str]:
    listed = subprocess.run(
        [
            venv / "bin" / "python",
            "-c",
            "import importlib.metadata as m; print(*(d.name for d in m.distributions()))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {canonicalize_name(name) for name in listed.split()}


class Output:
    """A process's merged output, read on a thread so that a wait can time out."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        assert process.stdout is not None
        self._stream = process.stdout
        self._thread = threading.Thread(target=self._read, args=(self._stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: TextIO) -> None:
        for line in stream:
            self.lines.append(line)
            self._new.put(line)

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._new.get(timeout=left)
            except queue.Empty:
                break
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} in {timeout} s:\n{self.text()}")

    def text(self) -> str:
        return "".join(self.lines)

    def close(self) -> str:
        """All of it, once the process has ended."""
        self._thread.join(timeout=10)
        self._stream.close()
        return self.text()


@pytest.mark.timeout(SERVES_WITHIN_SECONDS + 60)
def test_make_run_serves_from_a_fresh_clone_without_the_development_tools(
    tmp_path: Path,
) -> None:
    clone = fresh_copy(tmp_path / "clone")
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in LEAKING and not key.startswith("RECEIVER_")
    }
    # The interpreter the suite runs on, outside its virtualenv: the one a newcomer has.
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != Path(sys.prefix) / "bin"
    )
    make_path = shutil.which("make")
    assert make_path
    started = time.monotonic()
    make = subprocess.Popen(
        [make_path, "run", f"PORT={port}"],
        cwd=clone,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: make, its shell and the service
    )
    output = Output(make)
    try:
        console = output.wait_for("Console: ", SERVES_WITHIN_SECONDS)
        url = f"http://127.0.0.1:{port}"
        assert f"{url}/console/" in console
        assert "RECEIVER_ADMIN_TOKEN from .env" in console
        wait_until(lambda: _answers(f"{url}/healthz") or make.poll() is not None, timeout=60)
        assert make.poll() is None, output.text()
        served_after = time.monotonic() - started
    finally:
        stop(make)
    text = output.close()
    print(f"make run served after {served_after:.1f} s")  # the figure, for whoever runs it

    venv = clone / ".venv"
    assert (venv / ".runtime").exists()
    assert not (venv / ".installed").exists()
    assert dev_tools() & installed(venv) == set(), text
    assert [tool for tool in TOOLS if (venv / "bin" / tool).exists()] == []
    assert {"receiver", "uvicorn", "asyncpg"} <= installed(venv)
    settings = (clone / ".env").read_text()
    assert "RECEIVER_ADMIN_TOKEN=" in settings
    assert (clone / ".env").stat().st_mode & 0o777 == 0o600
    # Piped, the service's own lines are JSON: one per request, the health check's too.
    requests = [
        orjson.loads(line)
        for line in text.splitlines()
        if line.startswith("{") and "/healthz" in line
    ]
    assert requests
    assert requests[0]["event"] == "request"


def stop(make: subprocess.Popen[str]) -> None:
    """Ctrl-C, as a person would stop it: to the whole group, make and the service alike."""
    with contextlib.suppress(ProcessLookupError):  # it ended on its own
        os.killpg(make.pid, signal.SIGINT)
        try:
            make.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
    make.wait()


def _answers(url: str) -> bool:
    try:
        return HTTP.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:  # not listening yet
        return False


def test_make_env_leaves_no_env_behind_when_a_secret_cannot_be_made(tmp_path: Path) -> None:
    """As when the install under it is broken: it had written a .env with an empty secret,
    which stayed, and stopped every later `make run` until deleted by hand."""
    shutil.copy2(REPOSITORY / "Makefile", tmp_path / "Makefile")
    venv = tmp_path / "venv"
    bin_dir = venv / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    (bin_dir / "receiver").write_text("#!/bin/sh\necho 'ImportError' >&2\nexit 1\n")
    (bin_dir / "receiver").chmod(0o755)
    make_path = shutil.which("make")
    assert make_path
    made = subprocess.run(
        # -o: take the venv as installed; this one only holds the two commands .env runs.
        [make_path, "--silent", ".env", f"VENV={venv}", "-o", str(venv / ".runtime")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert made.returncode != 0
    assert not (tmp_path / ".env").exists()

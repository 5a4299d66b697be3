"""`receiver ...` runs for the tests, each forked from one process that has imported the CLI.

Started as `python -m receiver`, a run spends about 1.3 s of CPU importing the same modules
before its command begins, and the suite runs the CLI hundreds of times on two cores. So one
process per test worker (this module, run as a script) imports them once, and forks each run
from itself. A run is still a process of its own, as an operator's is: only the environment
the test gives (as `subprocess` passes it), its own working directory, stdin, stdout, stderr
and exit status, and `python -m receiver` executed through runpy as the interpreter does it.
Nothing is missed by importing early: a command reads its settings (and `.env`) when it
starts, never at import (receiver/operators/terminal.py). A test that sets a PYTHON*
variable, which acts on an interpreter's start, gets a fresh interpreter instead. (The runs
share one string hash seed, the forking process's; `random` is seeded again in each.)

Each run is forked twice: the first child waits for the run and reports its pid and exit
status over the request's socket, so that the forking process never waits nor holds a
thread (forking a threaded process is unsafe).
"""

import atexit
import gc
import importlib
import json
import locale
import os
import runpy
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# One request or answer: the arguments, environment and directory of a run, in JSON.
MESSAGE_BYTES = 1 << 20
# What every command imports, and the database drivers it loads when it connects.
PRELOADED = (
    "receiver.cli",
    "aiosqlite",
    "asyncpg",
    "sqlalchemy.dialects.sqlite.aiosqlite",
    "sqlalchemy.dialects.postgresql.asyncpg",
)
# How long the forking process may take to import the CLI and listen, on a loaded machine.
START_SECONDS = 60.0


class _Forker:
    """The forking process of this test worker, started on first use."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        self.folder = Path(tempfile.mkdtemp(prefix="receiver-cli-"))
        self.socket_path = str(self.folder / "forker.sock")
        self.errors = self.folder / "forker.err"
        with self.errors.open("wb") as errors:
            # Its stdin is its lifeline: when this process ends, it reads the end and leaves.
            self.process = subprocess.Popen(
                [sys.executable, __file__, self.socket_path],
                env={"PATH": os.environ.get("PATH", "")},
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )
        deadline = time.monotonic() + START_SECONDS
        while not os.path.exists(self.socket_path):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the CLI forker did not start: {self.errors.read_text()}")
            time.sleep(0.02)
        atexit.register(self.stop)

    def stop(self) -> None:
        if os.getpid() != self.owner:
            return  # a fork of the test worker, leaving: the forker is not its to stop
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)

    def run(
        self, args: tuple[str, ...], env: dict[str, str], cwd: Path, answer: str, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "receiver", *args]
        request = json.dumps({"args": args, "env": env, "cwd": os.path.abspath(cwd)}).encode()
        with (
            tempfile.TemporaryFile() as stdin,
            tempfile.TemporaryFile() as stdout,
            tempfile.TemporaryFile() as stderr,
            socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as connection,
        ):
            stdin.write(answer.encode())
            stdin.seek(0)
            connection.settimeout(timeout)
            connection.connect(self.socket_path)
            socket.send_fds(connection, [request], [f.fileno() for f in (stdin, stdout, stderr)])
            pid = json.loads(connection.recv(MESSAGE_BYTES))["pid"]
            try:
                code = json.loads(connection.recv(MESSAGE_BYTES))["code"]
            except TimeoutError as exc:
                os.kill(pid, signal.SIGKILL)
                raise subprocess.TimeoutExpired(command, timeout) from exc
            return subprocess.CompletedProcess(command, code, _text(stdout), _text(stderr))


def _text(output: Any) -> str:
    """What `subprocess.run(text=True)` makes of the bytes a run wrote."""
    output.seek(0)
    text: str = output.read().decode(locale.getpreferredencoding(False))
    return text.replace("\r\n", "\n").replace("\r", "\n")


_forker: _Forker | None = None
_starting = threading.Lock()


def run_forked(
    args: tuple[str, ...], env: dict[str, str], cwd: Path, answer: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    """`python -m receiver ARGS...` with exactly `env`, in `cwd`, `answer` typed in."""
    global _forker
    # What only a fresh interpreter (PYTHON* variables act on its start) or `subprocess`
    # itself (refusing a NUL or a missing directory, with its own errors) shows the same.
    texts = [*args, *env, *env.values()]
    interpreter = any(name.startswith("PYTHON") for name in env)
    if interpreter or any("\x00" in text for text in texts) or not Path(cwd).is_dir():
        return _run_fresh(args, env, cwd, answer, timeout)
    with _starting:
        if _forker is None:
            _forker = _Forker()
    return _forker.run(args, env, cwd, answer, timeout)


def _run_fresh(
    args: tuple[str, ...], env: dict[str, str], cwd: Path, answer: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "receiver", *args],
        env=env,
        cwd=cwd,
        input=answer,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _fork_on_request(socket_path: str) -> dict[str, Any]:
    """Serve requests until one is forked: returns that request, in the run's process."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as listener:
        # Listening before the name appears: the test worker connects once it sees it.
        listener.bind(f"{socket_path}.new")
        listener.listen(64)
        os.rename(f"{socket_path}.new", socket_path)
        # The first children are reaped by the system: this process never waits.
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        while True:
            ready, _, _ = select.select([listener, sys.stdin.fileno()], [], [])
            if sys.stdin.fileno() in ready and not os.read(sys.stdin.fileno(), 1):
                sys.exit(0)
            if listener not in ready:
                continue
            connection, _ = listener.accept()
            if os.fork() != 0:
                connection.close()
                continue
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            message, fds, _, _ = socket.recv_fds(connection, MESSAGE_BYTES, 3)
            pid = os.fork()
            if pid == 0:
                connection.close()
                for number, fd in enumerate(fds):
                    os.dup2(fd, number)
                    os.close(fd)
                request: dict[str, Any] = json.loads(message)
                return request
            connection.send(json.dumps({"pid": pid}).encode())
            _, status = os.waitpid(pid, 0)
            connection.send(json.dumps({"code": os.waitstatus_to_exitcode(status)}).encode())
            os._exit(0)


def _serve(socket_path: str) -> None:
    for module in PRELOADED:
        importlib.import_module(module)

    # What is imported stays for every run: left out of the collector's passes (the runs'
    # own objects are collected as usual), an exit's collection is ~0.4 s of CPU shorter.
    gc.freeze()
    request = _fork_on_request(socket_path)
    # As the interpreter starts `python -m receiver` in that directory, with that environment.
    os.environ.clear()
    os.environ.update(request["env"])
    time.tzset()
    os.chdir(request["cwd"])
    sys.path[0] = os.getcwd()
    sys.argv = ["-m", *request["args"]]
    runpy.run_module("receiver", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _serve(sys.argv[1])

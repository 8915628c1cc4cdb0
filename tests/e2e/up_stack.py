"""`make up`'s stack (``python -m dataplatform.devstack up``) started as a user starts it, for the e2e tests:
``UpProcess`` runs it in a session of its own, collects its output and samples every process it starts;
``assert_stopped_completely`` checks that stopping it left nothing behind."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from dataplatform.devstack.moto_server import free_port
from dataplatform.devstack.server_process import port_free
from dataplatform.devstack.standalone import StandaloneAirflow
from tests.e2e.airflow_api import E2E_DB, ON_POSTGRES, wait_for

REPO = Path(__file__).resolve().parents[2]
BANNER_DONE = "Ctrl-C (or SIGTERM) stops everything"
# The moto server's command line: moto behind the project's fault injector (MotoServer).
MOTO_COMMAND = "dataplatform.devstack.aws_endpoint"


class UpProcess:
    """``python -m dataplatform.devstack up`` in a session of its own (as a shell runs a job), its
    output collected line by line, and every process it starts sampled while it runs."""

    def __init__(self, tmp: Path, env: dict[str, str] | None = None):
        self.home = tmp / "airflow"
        self.env_file = tmp / "airflow.env"
        self.port = free_port()
        self.lines: list[str] = []
        self.seen: dict[int, psutil.Process] = {}
        self.sessions: set[int] = set()
        # Every command line each process had: a child sampled between fork and exec still shows its
        # parent's (`up`'s own), and the one it execs is seen on a later sample.
        self.commands: dict[int, set[str]] = {}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dataplatform.devstack",
                "up",
                "--port",
                str(self.port),
                "--home",
                str(self.home),
                "--db",
                E2E_DB,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        self.root = psutil.Process(self.process.pid)
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._sample, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def _sample(self) -> None:
        """Every process in the tree (and in the sessions its children open), until `up` exits."""
        while self.process.poll() is None:
            for process in stack_processes(self.root):
                self.seen.setdefault(process.pid, process)
                self.sessions.add(_sid(process.pid))
                with contextlib.suppress(psutil.Error):
                    self.commands.setdefault(process.pid, set()).add(" ".join(process.cmdline()))
            time.sleep(0.2)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout: float = 900) -> str:
        def found():
            if self.process.poll() is not None and not any(text in line for line in self.lines):
                raise AssertionError(f"`up` exited with {self.process.returncode}:\n{self.output}")
            return next((line for line in self.lines if text in line), None)

        return wait_for(found, timeout, f"`up` to print {text!r}", interval=0.5)

    @property
    def moto_port(self) -> int:
        return int(re.search(r"moto server: http://127\.0\.0\.1:(\d+)", self.output).group(1))

    @property
    def postgres_port(self) -> int | None:
        match = re.search(r"^postgres \d+ on 127\.0\.0\.1:(\d+), cluster ", self.output, re.M)
        return int(match.group(1)) if match else None

    def airflow_client(self) -> StandaloneAirflow:
        """A REST client for the running stack (not started: it only reads the login from the home)."""
        return StandaloneAirflow(self.home, {}, port=self.port)

    def run_cli(self, command: str) -> subprocess.CompletedProcess:
        """A shell command as a user types it, in the repository, with `make airflow` pointed at this
        stack's env file (the default, .local/airflow.env, belongs to the user's own `make up`)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "DATAPLATFORM_"))}
        env["AIRFLOW_ENV_FILE"] = str(self.env_file)
        return subprocess.run(
            ["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
        )

    def group_alive(self) -> bool:
        """Whether `up`'s process group still has a member. Once it has none, its id is a free pid with
        which a later process (another test's) may lead a group of its own: no signal to that group then."""
        if self.process.returncode is None:  # not reaped: its pid, and so the group id, is still its own
            return True
        for process in self.seen.values():
            with contextlib.suppress(psutil.Error, OSError):
                if process.is_running() and os.getpgid(process.pid) == self.process.pid:
                    return True
        return False

    def signal_group(self, signum: int) -> None:
        """What a terminal does: Ctrl-C and a hang-up go to its foreground process group."""
        if self.group_alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)

    def kill(self) -> None:
        self.signal_group(signal.SIGKILL)
        for process in self.seen.values():
            with contextlib.suppress(psutil.Error):
                process.kill()


def stack_processes(root: psutil.Process) -> list[psutil.Process]:
    """``root``, its descendants, and every process in a session one of them leads (task processes
    re-parented away from a dying parent stay in the session)."""
    with contextlib.suppress(psutil.Error):
        tree = [root, *root.children(recursive=True)]
        sessions = {p.pid for p in tree if _sid(p.pid) == p.pid}
        return tree + [p for p in psutil.process_iter() if _sid(p.pid) in sessions]
    return []


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def alive(processes) -> list[str]:
    left = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{process.pid} {' '.join(process.cmdline())[:150]}")
    return left


def assert_stopped_completely(stack: UpProcess) -> None:
    stack.process.wait(timeout=180)
    assert stack.process.returncode == 0, stack.output
    seen = " | ".join(command for commands in stack.commands.values() for command in commands)
    assert "airflow standalone" in seen and MOTO_COMMAND in seen, f"the sampler saw the stack: {seen}"
    if ON_POSTGRES:  # the server starts first: before "starting airflow standalone", which every test awaits
        assert stack.postgres_port, stack.output
        assert "postgres -D" in seen, f"the sampler saw the PostgreSQL server: {seen}"
        assert port_free(stack.postgres_port), f"postgres's port {stack.postgres_port} still taken"
    assert alive(stack.seen.values()) == [], stack.output
    sessions = stack.sessions - {None}
    assert alive(p for p in psutil.process_iter() if _sid(p.pid) in sessions) == []
    assert port_free(stack.port), f"airflow's port {stack.port} still taken"
    assert port_free(stack.moto_port), f"moto's port {stack.moto_port} still taken"
    assert not stack.env_file.exists(), "the env file of a stopped stack is removed"


@contextlib.contextmanager
def up_stack(env: dict[str, str] | None = None) -> Iterator[UpProcess]:
    """A ``make up`` stack starting in a temporary directory (``env``: added to the environment it starts
    in); killed (whatever is left of it) at the end."""
    # Not pytest's tmp_path (0700): under root the postgres OS user must reach the cluster in the home.
    directory = Path(tempfile.mkdtemp(prefix="dataplatform-up-e2e-"))
    directory.chmod(0o711)
    stack = UpProcess(directory, env)
    try:
        yield stack
    finally:
        print(f"--- output of `up` ---\n{stack.output}")  # shown when a test fails
        stack.kill()
        shutil.rmtree(directory, ignore_errors=True)

"""`make up` as a newcomer uses it: the real stack (`python -m dataplatform.devstack up`: moto server,
seeded demo lake, `airflow standalone`; with `--db postgres`, `make up DB=postgres`, unless
DATAPLATFORM_E2E_DB=sqlite) started in a session of its own.

* Stopping it leaves nothing behind, for Ctrl-C (SIGINT to the terminal's process group), `kill`
  (SIGTERM), a SIGTERM repeated while it cleans up, a closed terminal (SIGHUP) and a SIGTERM while it is
  still starting: every process it started, however deep, is gone and its ports are free.
* The banner's and the README's CLI commands (`make airflow ARGS="..."`) reach the running stack: the
  banner's unpause starts the scheduled run for yesterday (green: the demo lake has that day), and the
  README's backfill creates one run per day, each green, seen over the REST API.
"""

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
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psutil
import pytest

from dataplatform.devstack.moto_server import free_port
from dataplatform.devstack.server_process import port_free
from dataplatform.devstack.standalone import StandaloneAirflow
from tests.e2e.airflow_api import E2E_DB, ON_POSTGRES, dag_runs, describe_run, wait_for, wait_for_run

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BANNER_DONE = "Ctrl-C (or SIGTERM) stops everything"
GLUE = "glue_partition_loader"
# The moto server's command line: moto behind the project's fault injector (MotoServer).
MOTO_COMMAND = "dataplatform.devstack.aws_endpoint"


class UpProcess:
    """``python -m dataplatform.devstack up`` in a session of its own (as a shell runs a job), its
    output collected line by line, and every process it starts sampled while it runs."""

    def __init__(self, tmp: Path):
        self.home = tmp / "airflow"
        self.env_file = tmp / "airflow.env"
        self.port = free_port()
        self.lines: list[str] = []
        self.seen: dict[int, psutil.Process] = {}
        self.sessions: set[int] = set()
        self.commands: dict[int, str] = {}
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
                if process.pid not in self.commands:
                    with contextlib.suppress(psutil.Error):
                        self.commands[process.pid] = " ".join(process.cmdline())
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

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
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


@pytest.fixture
def up():
    # Not pytest's tmp_path (0700): under root the postgres OS user must reach the cluster in the home.
    directory = Path(tempfile.mkdtemp(prefix="dataplatform-up-e2e-"))
    directory.chmod(0o711)
    stack = UpProcess(directory)
    yield stack
    print(f"--- output of `up` ---\n{stack.output}")  # shown when the test fails
    stack.kill()
    shutil.rmtree(directory, ignore_errors=True)


def assert_stopped_completely(stack: UpProcess) -> None:
    stack.process.wait(timeout=180)
    assert stack.process.returncode == 0, stack.output
    seen = " | ".join(stack.commands.values())
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


def _send_to_group(stack: UpProcess, signum: int) -> None:
    """What a terminal does: Ctrl-C and a hang-up go to its foreground process group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(stack.process.pid, signum)


@pytest.mark.parametrize(
    ("how", "send"),
    [
        ("Ctrl-C", lambda stack: _send_to_group(stack, signal.SIGINT)),
        ("kill", lambda stack: stack.process.send_signal(signal.SIGTERM)),
        ("closed terminal", lambda stack: _send_to_group(stack, signal.SIGHUP)),
    ],
)
def test_a_stop_signal_stops_every_process_of_the_stack(up, how, send):
    up.wait_for_line(BANNER_DONE)
    commands = _commands(up)
    assert "airflow standalone" in commands and MOTO_COMMAND in commands, commands
    send(up)
    assert_stopped_completely(up)


def test_a_signal_repeated_during_the_clean_up_does_not_cut_it_short(up):
    up.wait_for_line(BANNER_DONE)
    up.process.send_signal(signal.SIGTERM)
    up.wait_for_line(": stopping airflow")
    for _ in range(3):
        _send_to_group(up, signal.SIGTERM)
        _send_to_group(up, signal.SIGINT)
        time.sleep(0.3)
    assert_stopped_completely(up)
    assert "already stopping" in up.output


def test_a_signal_while_the_stack_starts_stops_what_has_started(up):
    up.wait_for_line("starting airflow standalone")
    wait_for(lambda: "airflow standalone" in _commands(up), 120, "airflow standalone to be spawned", 0.2)
    up.process.send_signal(signal.SIGTERM)
    assert_stopped_completely(up)


def _commands(stack: UpProcess) -> str:
    """The command lines of the stack's live processes."""
    return " ".join(alive(stack.seen.values()))


# -- the CLI against the running stack ----------------------------------------------------------------


def readme_command(pattern: str) -> str:
    """A command exactly as README.md writes it."""
    match = re.search(pattern, (REPO / "README.md").read_text())
    assert match, f"README.md has no command matching {pattern}"
    return match.group(0)


def test_the_banner_unpause_and_the_readme_backfill_reach_the_running_stack(up):
    banner = up.wait_for_line(BANNER_DONE) and up.output
    airflow = up.airflow_client()
    wait_for(lambda: _dag_known(airflow, GLUE), 180, f"{GLUE} to be parsed", interval=2.0)

    # The README's backfill while the DAG is paused: its runs are created, and wait (queued).
    backfill = readme_command(r'make airflow ARGS="backfill create --dag-id glue_partition_loader [^"]*"')
    result = up.run_cli(backfill)
    assert result.returncode == 0, result.stdout + result.stderr
    dates = re.search(r"--from-date (\S+) --to-date ([^\s\"]+)", backfill).groups()
    days = (date.fromisoformat(dates[1]) - date.fromisoformat(dates[0])).days + 1
    wait_for(lambda: len(dag_runs(airflow, GLUE, "backfill")) == days, 60, "the backfill's runs")
    runs = dag_runs(airflow, GLUE, "backfill")
    first = date.fromisoformat(dates[0])
    assert sorted(r["data_interval_start"][:10] for r in runs) == [
        (first + timedelta(days=i)).isoformat() for i in range(days)
    ]
    assert {r["state"] for r in runs} == {"queued"}

    # The banner's suggestion, as printed: unpausing lets them run, and starts the run for yesterday.
    unpause = re.search(r'make airflow ARGS="dags unpause [^"]*"', banner).group(0)
    result = up.run_cli(unpause)
    assert result.returncode == 0, result.stdout + result.stderr
    assert airflow.api("GET", f"/dags/{GLUE}")["is_paused"] is False
    for run in dag_runs(airflow, GLUE, "backfill"):
        finished = wait_for_run(airflow, GLUE, run["dag_run_id"], timeout=900)
        assert finished["state"] == "success", describe_run(airflow, GLUE, run["dag_run_id"])
    scheduled = wait_for(lambda: dag_runs(airflow, GLUE, "scheduled"), 120, "the scheduled run", 2.0)
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    assert scheduled[0]["data_interval_start"][:10] == yesterday
    finished = wait_for_run(airflow, GLUE, scheduled[0]["dag_run_id"], timeout=900)
    assert finished["state"] == "success", describe_run(airflow, GLUE, scheduled[0]["dag_run_id"])

    up.process.send_signal(signal.SIGTERM)
    assert_stopped_completely(up)


def _dag_known(airflow: StandaloneAirflow, dag_id: str) -> bool:
    with contextlib.suppress(Exception):
        return bool(airflow.api("GET", f"/dags/{dag_id}"))
    return False

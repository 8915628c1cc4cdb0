"""``make up``: moto server, the seeded demo lake and ``airflow standalone`` for the web UI.

Runs until SIGINT (Ctrl-C), SIGTERM (``kill``, a process manager) or SIGHUP (the terminal closed), then
stops Airflow (its whole session: scheduler, api-server, task processes), the moto server and, with
``--db postgres`` (``make up DB=postgres``), the PostgreSQL server it started. The metadata database
lives in ``.local/airflow`` (``airflow.db``, or the PostgreSQL cluster in ``postgres/``) and survives
restarts; the moto state does not (it is re-seeded).

While the stack is up, ``.local/airflow.env`` holds the environment that points a shell's ``airflow``
CLI (and the project's CLIs) at it: ``make airflow ARGS="..."`` sources it, or ``source`` it yourself.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import psutil

from dataplatform.devstack.airflow_env import airflow_env
from dataplatform.devstack.demo import LOCAL_DIR, check_java, seed_local_lake
from dataplatform.devstack.moto_server import MotoServer
from dataplatform.devstack.postgres import PostgresServer, server_bindir
from dataplatform.devstack.standalone import StandaloneAirflow

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# What the env file exports: what a shell needs to reach this stack's metadata database, DAGs, moto
# server and API (the rest of airflow_env() is the caller's own environment).
ENV_FILE_PREFIXES = ("AIRFLOW_", "AIRFLOW__", "AWS_", "DATAPLATFORM_")
ENV_FILE_NAMES = ("PYTHONPATH",)


class StopRequested(BaseException):
    """A stop signal arrived. A BaseException, so that no ``except Exception`` on the way swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP stop the stack once, cleanly, whichever thread the kernel delivers
    them to, and however often they come.

    With a Python handler installed the process is never killed by these signals: CPython runs the
    handler in the main thread. The first signal raises StopRequested there (unless a child is being
    started: then right after, so the child is tracked before the clean-up starts); later ones are
    only noted, so that the clean-up runs to its end.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.stopping = False
        self._deferring = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None or self.stopping:
            # print() here could re-enter a write the main thread is in the middle of.
            os.write(2, f"{signal.Signals(signum).name}: already stopping, please wait\n".encode())
            return
        self.received = signum
        if not self._deferring:
            self.stopping = True
            raise StopRequested(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold a stop until the block (starting a child and registering its clean-up) is done."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self.received is not None and not self.stopping:
            self.stopping = True
            raise StopRequested(self.received)


def run_up(port: int = 8080, home: Path | None = None, db: str = "sqlite") -> int:
    home = Path(home or LOCAL_DIR / "airflow")
    env_file = home.parent / "airflow.env"
    with StopSignals() as signals:
        stack = contextlib.ExitStack()
        try:
            return _serve(port, home, env_file, db, signals, stack)
        except StopRequested as stop:
            with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
                stopping = "airflow, moto and postgres" if db == "postgres" else "airflow and moto"
                print(f"{stop}: stopping {stopping} ...", flush=True)
            return 0
        finally:
            signals.stopping = True  # from here on a signal is only noted: the clean-up runs to its end
            started = descendants()
            stack.close()
            kill_leftovers(started)


def _serve(
    port: int, home: Path, env_file: Path, db: str, signals: StopSignals, stack: contextlib.ExitStack
) -> int:
    print(f"java: {check_java()}")
    home.mkdir(parents=True, exist_ok=True)
    database_url = _start_postgres(home, signals, stack) if db == "postgres" else None
    with signals.deferred():
        moto = stack.enter_context(MotoServer(log_path=home / "moto.log"))
    print(f"moto server: {moto.url}")
    seed_local_lake(moto.url)
    print("starting airflow standalone (about a minute) ...", flush=True)
    env = airflow_env(home, moto.url, database_url=database_url)
    with signals.deferred():
        airflow = stack.enter_context(StandaloneAirflow(home, env, port=port))
    # A first start migrates the database: minutes on a slow or busy machine.
    airflow.start_and_wait(timeout=600)
    with signals.deferred():
        write_env_file(env_file, airflow.env)
        stack.callback(env_file.unlink, missing_ok=True)
    print_banner(airflow, moto, env_file)
    # Short sleeps: a signal delivered to another thread is handled when the main thread wakes up.
    while airflow.running:
        time.sleep(0.5)
    print(f"airflow standalone exited by itself; log: {airflow.log_path}", file=sys.stderr)
    return 1


def _start_postgres(home: Path, signals: StopSignals, stack: contextlib.ExitStack) -> str:
    """The PostgreSQL server for the metadata database (its cluster in ``<home>/postgres``): its URL."""
    server_bindir()  # installs PostgreSQL first when it is missing (as root): not while holding a stop
    with signals.deferred():
        postgres = stack.enter_context(PostgresServer(home / "postgres"))
    print(postgres.describe(), flush=True)
    return postgres.url


def print_banner(airflow: StandaloneAirflow, moto: MotoServer, env_file: Path) -> None:
    shown = os.path.relpath(env_file) if env_file.is_relative_to(Path.cwd()) else str(env_file)
    print()
    print(f"  Airflow UI and API: {airflow.url}")
    print(f"  login:              {airflow.username} / {airflow.password}")
    print(f"  AWS (moto):         {moto.url}   logs: {airflow.home}")
    print("  DAGs start paused. Runs of a paused DAG (triggered or backfilled) stay queued until you")
    print('  unpause it, in the UI or: make airflow ARGS="dags unpause glue_partition_loader"')
    print(f'  CLI in another shell: make airflow ARGS="...", or `source {shown}` and then')
    print("    airflow dags list / python -m dataplatform.reconciliation status")
    print("  Ctrl-C (or SIGTERM) stops everything.", flush=True)


def write_env_file(path: Path, env: Mapping[str, str]) -> None:
    """``export NAME='value'`` lines for the stack's settings (mode 0600: it holds the login-free
    connection secrets of a throwaway local stack, still not for other users of the machine)."""
    lines = [
        f"export {name}={shlex.quote(value)}"
        for name, value in sorted(env.items())
        if name.startswith(ENV_FILE_PREFIXES) or name in ENV_FILE_NAMES
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("# Written by `make up` for as long as it runs; removed when it stops.\n")
        out.write("\n".join(lines) + "\n")


def descendants() -> set[psutil.Process]:
    """Every process this one started, however deep (children in sessions of their own included)."""
    with contextlib.suppress(psutil.Error):
        return set(psutil.Process().children(recursive=True))
    return set()


def kill_leftovers(processes: set[psutil.Process]) -> None:
    """SIGKILL what the orderly stops left: a child started just as the stop came, or one whose parent
    died before passing the SIGTERM on. psutil.Process compares creation times, so a reused pid is
    never hit."""
    for process in processes | descendants():
        with contextlib.suppress(psutil.Error):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                process.kill()
    psutil.wait_procs(list(processes), timeout=5)

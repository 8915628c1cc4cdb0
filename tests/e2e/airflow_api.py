"""Helpers for e2e tests: waiting, and a running Airflow's REST API v2 (runs, task instances, logs).

The e2e Airflow keeps its metadata on PostgreSQL (a throw-away server per module, as in MWAA), unless
``DATAPLATFORM_E2E_DB=sqlite``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from dataplatform.devstack.airflow_env import airflow_env
from dataplatform.devstack.postgres import temporary_postgres
from dataplatform.devstack.standalone import AirflowApiError, StandaloneAirflow

TERMINAL = {"success", "failed"}
E2E_DB = os.environ.get("DATAPLATFORM_E2E_DB", "postgres")
if E2E_DB not in ("postgres", "sqlite"):
    raise ValueError(f"DATAPLATFORM_E2E_DB={E2E_DB!r}: postgres (the default) or sqlite")
ON_POSTGRES = E2E_DB == "postgres"


@contextlib.contextmanager
def metadata_database() -> Iterator[str | None]:
    """The e2e Airflow's database URL: a throw-away PostgreSQL server's, or None (SQLite in its home)."""
    if not ON_POSTGRES:
        yield None
        return
    with temporary_postgres(prefix="dataplatform-e2e-postgres-") as postgres:
        print(postgres.describe())
        yield postgres.url


@contextlib.contextmanager
def standalone_airflow(
    home: Path, moto_url: str, while_starting: Callable[[], object] | None = None
) -> Iterator[StandaloneAirflow]:
    """``airflow standalone`` on free ports against the moto server, healthy, for a module's tests;
    ``while_starting`` runs while its components boot. Its log tail is printed when anything fails."""
    with metadata_database() as database_url:
        env = {**airflow_env(home, moto_url, database_url=database_url), "DATAPLATFORM_ENV": "local"}
        server = StandaloneAirflow(home, env).start()
        try:
            if while_starting:
                while_starting()
            server.start_and_wait(timeout=240)  # started above; again on new ports if one was taken
            yield server
        except BaseException:
            print(f"--- {server.log_path} ---\n{server.log_tail(100)}")
            raise
        finally:
            server.close()


def wait_for(predicate, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def run_path(dag_id: str, run_id: str) -> str:
    return f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"


def task_instances(airflow: StandaloneAirflow, dag_id: str, run_id: str) -> list[dict]:
    return airflow.api("GET", f"{run_path(dag_id, run_id)}/taskInstances")["task_instances"]


def describe_run(airflow: StandaloneAirflow, dag_id: str, run_id: str) -> str:
    """Task states and the logs of failed tasks, for assertion messages."""
    lines = []
    for ti in task_instances(airflow, dag_id, run_id):
        lines.append(f"  {ti['task_id']}[{ti['map_index']}] {ti['state']} try {ti['try_number']}")
        if ti["state"] in ("failed", "up_for_retry") and ti["try_number"]:
            lines.append(task_log(airflow, dag_id, run_id, ti))
    return f"{dag_id} run {run_id}:\n" + "\n".join(lines)


def task_log(airflow: StandaloneAirflow, dag_id: str, run_id: str, ti: dict) -> str:
    try:
        log = airflow.api(
            "GET",
            f"{run_path(dag_id, run_id)}/taskInstances/{ti['task_id']}/logs/{ti['try_number']}",
            params={"map_index": ti["map_index"], "full_content": "true"},
        )
    except AirflowApiError as exc:
        return f"    (no log: {exc})"
    content = log.get("content") if isinstance(log, dict) else log
    if isinstance(content, list):
        content = "\n".join(_log_line(entry) for entry in content)
    return "    " + "\n    ".join(str(content).splitlines()[-40:])


def _log_line(entry) -> str:
    """One structured log entry: the event, plus the exception (type, message, raising frame)."""
    if not isinstance(entry, dict):
        return str(entry)
    line = str(entry.get("event", entry))
    for error in entry.get("error_detail") or []:
        frames = error.get("frames") or [{}]
        where = f"{frames[-1].get('filename')}:{frames[-1].get('lineno')}"
        line += f"\n  {error.get('exc_type')}: {error.get('exc_value')} (at {where})"
    return line


def wait_for_run(airflow: StandaloneAirflow, dag_id: str, run_id: str, timeout: float = 180.0) -> dict:
    """Poll the run until it ends. No task here should need a retry (the 2-minute retry delay would
    blow the time budget), so a task up for retry fails the test at once, with its log."""

    def finished():
        run = airflow.api("GET", run_path(dag_id, run_id))
        if run["state"] in TERMINAL:
            return run
        if any(ti["state"] == "up_for_retry" for ti in task_instances(airflow, dag_id, run_id)):
            raise AssertionError(
                f"a task failed and waits for a retry\n{describe_run(airflow, dag_id, run_id)}"
            )
        return None

    try:
        return wait_for(finished, timeout, f"{dag_id} run {run_id}", interval=2.0)
    except TimeoutError as exc:
        # A run that never started usually waits behind another run of the DAG (max_active_runs): show those.
        others = [
            describe_run(airflow, dag_id, other["dag_run_id"])
            for other in airflow.api("GET", f"/dags/{dag_id}/dagRuns", params={"state": "running"})[
                "dag_runs"
            ]
            if other["dag_run_id"] != run_id
        ]
        raise AssertionError("\n".join([str(exc), describe_run(airflow, dag_id, run_id), *others])) from None


def running_together(tis: list[dict]) -> list[tuple[str, str]]:
    """Pairs of task instances that ran at the same time, by the start and end the metadata database
    recorded for them: each started before the other ended."""
    spans = [
        (datetime.fromisoformat(ti["start_date"]), datetime.fromisoformat(ti["end_date"]), _ti_name(ti))
        for ti in tis
        if ti["start_date"] and ti["end_date"]
    ]
    return [(a[2], b[2]) for a, b in itertools.combinations(spans, 2) if a[0] < b[1] and b[0] < a[1]]


def most_at_once(spans: list[tuple[datetime, datetime]]) -> int:
    """The largest number of ``(start, end)`` spans open at one instant (a span ending when another
    starts does not overlap it)."""
    edges = sorted([(end, -1) for _, end in spans] + [(start, 1) for start, _ in spans])
    most = running = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def _ti_name(ti: dict) -> str:
    return (
        f"{ti['task_id']}[{ti['rendered_map_index'] or ti['map_index']}] {ti['start_date']}..{ti['end_date']}"
    )


def dag_runs(airflow: StandaloneAirflow, dag_id: str, run_type: str) -> list[dict]:
    return [r for r in airflow.api("GET", f"/dags/{dag_id}/dagRuns")["dag_runs"] if r["run_type"] == run_type]


def dag_parsed(airflow: StandaloneAirflow, dag_id: str) -> bool:
    try:
        return bool(airflow.api("GET", f"/dags/{dag_id}"))
    except AirflowApiError as exc:
        if exc.status_code == 404:
            return False
        raise


def unpause_after_its_scheduled_run(airflow: StandaloneAirflow, dag_id: str, timeout: float = 420) -> None:
    """Wait until the DAG is parsed, unpause it, and wait for the scheduled run that unpausing a cron
    DAG starts (the latest tick, catchup off): afterwards the tests' own runs are the only ones."""
    wait_for(lambda: dag_parsed(airflow, dag_id), 120, f"{dag_id} to be parsed", interval=2.0)
    airflow.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
    scheduled = wait_for(
        lambda: dag_runs(airflow, dag_id, "scheduled"), 60, "the scheduled run", interval=2.0
    )
    wait_for_run(airflow, dag_id, scheduled[0]["dag_run_id"], timeout=timeout)


def pause(airflow: StandaloneAirflow, *dag_ids: str) -> None:
    """Pause DAGs a module unpaused: on the shared Airflow (``local_airflow``) their schedules must not
    start runs against the next module's lake."""
    for dag_id in dag_ids:
        airflow.api("PATCH", f"/dags/{dag_id}", json={"is_paused": True})

"""`make up` as a newcomer uses it: the real stack (`python -m dataplatform.devstack up`: moto server,
seeded demo lake, `airflow standalone`; with `--db postgres`, `make up DB=postgres`, unless
DATAPLATFORM_E2E_DB=sqlite) started in a session of its own.

* Stopping it leaves nothing behind, for Ctrl-C (SIGINT to the terminal's process group) on the running
  stack followed by more signals while it cleans up (SIGINT, SIGTERM and SIGHUP repeated: how the shared
  stack below is stopped, tests/e2e/conftest.py), and `kill` (SIGTERM to the stack's process alone) while
  it is still starting: every process it started, however deep, is gone and its ports are free. Each
  phase (running, cleaning up, starting) and each way a signal arrives (to the group, to the process
  alone) is covered; a full start costs minutes, so no signal gets a stack of its own. That the three
  signals are one and the same stop (the first raises, later ones are noted) is tested without a stack,
  signal by signal: tests/unit/test_devstack_stop_signals.py.
* The banner's and the README's CLI commands (`make airflow ARGS="..."`) reach the running stack: the
  banner's unpause starts the scheduled run for yesterday (green: the demo lake has that day), and the
  README's backfill creates one run per day, each green, seen over the REST API. That test runs on the
  stack it shares with the lake-health page's browser test (tests/e2e/conftest.py), which stops it with
  Ctrl-C (SIGINT to its group) after both and checks it stopped completely.
"""

from __future__ import annotations

import contextlib
import re
import signal
from datetime import UTC, date, datetime, timedelta

import pytest

from dataplatform.devstack.standalone import StandaloneAirflow
from tests.e2e.airflow_api import dag_runs, describe_run, wait_for, wait_for_run
from tests.e2e.up_stack import (
    BANNER_DONE,
    REPO,
    UpProcess,
    alive,
    assert_stopped_completely,
    up_stack,
)

pytestmark = pytest.mark.e2e

GLUE = "glue_partition_loader"


@pytest.fixture
def up():
    with up_stack() as stack:
        yield stack


def test_a_signal_while_the_stack_starts_stops_what_has_started(up):
    up.wait_for_line("starting airflow standalone")
    wait_for(lambda: "airflow standalone" in _commands(up), 120, "airflow standalone to be spawned", 0.2)
    up.process.send_signal(signal.SIGTERM)  # kill
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


def test_the_banner_unpause_and_the_readme_backfill_reach_the_running_stack(running_up_stack):
    # The shared stack (tests/e2e/conftest.py): stopped with Ctrl-C and checked after its last test.
    up = running_up_stack
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


def _dag_known(airflow: StandaloneAirflow, dag_id: str) -> bool:
    with contextlib.suppress(Exception):
        return bool(airflow.api("GET", f"/dags/{dag_id}"))
    return False

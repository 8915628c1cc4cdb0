"""``make chaos``'s bookkeeping: retries counted from the Airflow metadata database, the DAG selection,
and the figures other commands leave for its last line."""

import json
import sqlite3

import pytest

from dataplatform.devstack import chaos
from dataplatform.devstack.demo import DemoError

pytestmark = pytest.mark.unit


def test_task_retries_count_tries_beyond_the_first_and_the_runs_that_needed_them(tmp_path):
    db = tmp_path / "airflow.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE task_instance (dag_id, run_id, task_id, map_index, try_number)")
        conn.executemany(
            "INSERT INTO task_instance VALUES (?, ?, ?, ?, ?)",
            [
                ("recon_stateful", "r1", "process", -1, 3),
                ("recon_stateful", "r1", "index", 0, 2),
                ("recon_stateful", "r2", "process", -1, 1),
                ("gdpr_erasure", "g1", "claim", -1, 1),
            ],
        )
    retries = chaos.task_retries(db)
    assert (retries["task_retries"], retries["runs_retried"]) == (3, 1)
    assert retries["retries_by_dag"] == {"recon_stateful": 3}


def test_select_runs_keeps_the_demo_order_and_refuses_an_unknown_dag():
    runs = chaos.select_runs(("recon_stateful", "recon_stateless"))
    assert [run.dag_id for run in runs] == ["recon_stateless", "recon_stateful"] * 2
    assert chaos.select_runs(None) == chaos.DEMO_RUNS
    with pytest.raises(DemoError, match="no_such_dag"):
        chaos.select_runs(("no_such_dag",))


def test_figures_of_other_commands_are_read_when_present_else_null(tmp_path, monkeypatch):
    monkeypatch.setattr(chaos, "FIGURES_DIR", tmp_path)
    assert chaos.crash_points_survived() is None
    (tmp_path / "crash_points.json").write_text(json.dumps({"crash_points_survived": 57}))
    assert chaos.crash_points_survived() == 57

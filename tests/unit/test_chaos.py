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
    retries = chaos.task_retries({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{db}?timeout=60"})
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


def test_one_faulted_pass_per_seed_then_the_baseline_and_distinct_seeds_only():
    passes = chaos.pass_plans(0.05, (1, 2), None)
    assert list(passes) == ["faults-seed1", "faults-seed2", "baseline"]
    assert [passes[label].seed for label in ("faults-seed1", "faults-seed2")] == [1, 2]
    assert {passes[label].rate for label in ("faults-seed1", "faults-seed2")} == {0.05}
    assert passes["baseline"] is None
    for seeds in ((), (3, 3)):
        with pytest.raises(DemoError, match="distinct"):
            chaos.pass_plans(0.05, seeds, None)


def test_the_cli_refuses_bad_seeds_and_databases_before_anything_runs(capsys):
    from dataplatform.devstack.__main__ import main

    for option, value in (("--seeds", "1,x"), ("--seeds", "2,2"), ("--db", "mysql")):
        with pytest.raises(SystemExit) as exit_info:
            main(["chaos", option, value])
        assert exit_info.value.code == 2
        assert f"argument {option}" in capsys.readouterr().err

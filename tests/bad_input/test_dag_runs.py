"""A few bad params through real DAG runs (``dag.test()``, slower: kept to the DAGs whose first task
would otherwise write first): the value passes the trigger form's JSON schema, the first task fails on
it, nothing downstream runs, and the whole lake is unchanged."""

from __future__ import annotations

import pytest

from tests.airflow_helpers import run_repo_dag, task_states

pytestmark = [pytest.mark.integration]

CASES = [
    # A subject id of the right type and length but not the configured format: accept_requests fails
    # before the requests table is written (or created).
    pytest.param(
        "gdpr_erasure", {"subject_ids": ["not-a-customer"]}, "accept_requests", id="gdpr-subject_ids"
    ),
    # A launch id that is no launch: select_launches fails before any launch is priced.
    pytest.param(
        "benchmark_pricing", {"launch_ids": ["no-such-launch"]}, "select_launches", id="pricing-launch_ids"
    ),
]


@pytest.mark.bad_input
@pytest.mark.parametrize(("dag_id", "conf", "first_task"), CASES)
def test_a_bad_param_fails_the_first_task_and_changes_nothing(lake, airflow_db, dag_id, conf, first_task):
    dagrun = run_repo_dag(dag_id, run_conf=conf)
    lake.check_unchanged(f"{dag_id} with {conf}")
    assert dagrun.state == "failed"
    states = task_states(dagrun)
    assert states[f"{first_task}[-1]"] == "failed"
    assert not [task for task, state in states.items() if state == "success"], states

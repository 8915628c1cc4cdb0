"""The Airflow Deadline Alerts of the scheduled DAGs come from ``health.deadlines`` in the config: the
parsed DAGs carry them (reference, interval, the callback that sends the alert), they survive the
serialization the scheduler reads, and 0 minutes leaves a DAG without one."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from dataplatform.config import settings
from tests.deadline_config import local_config_with_aws_deadlines

pytestmark = pytest.mark.unit

DAGS = Path(__file__).resolve().parents[2] / "dags"
EXPECTED = {
    # dag_id: (health.deadlines key, reference class)
    "iceberg_maintenance": ("iceberg_maintenance_minutes", "DagRunLogicalDateDeadline"),
    "recon_stateless": ("recon_stateless_behind_minutes", "DagRunLogicalDateDeadline"),
    "benchmark_pricing": ("benchmark_pricing_minutes", "DagRunQueuedAtDeadline"),
}


@pytest.fixture(scope="module")
def deadlines_on(tmp_path_factory):
    """The config with aws.yaml's deadlines (local.yaml leaves them off: tests/deadline_config.py)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(
            "DATAPLATFORM_CONFIG", str(local_config_with_aws_deadlines(tmp_path_factory.mktemp("c")))
        )
        settings.cache_clear()
        yield
    settings.cache_clear()


@pytest.fixture(scope="module")
def dags(deadlines_on):
    from airflow.dag_processing.dagbag import DagBag

    found = {}
    for dag_id in EXPECTED:
        bag = DagBag(dag_folder=str(DAGS / f"{dag_id}.py"))
        assert not bag.import_errors, bag.import_errors
        found[dag_id] = bag.dags[dag_id]
    return found


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_the_scheduled_dag_carries_its_deadline_from_the_config(dags, dag_id):
    from airflow.serialization.serialized_objects import DagSerialization

    key, reference = EXPECTED[dag_id]
    minutes = getattr(settings().health.deadlines, key)
    (deadline,) = dags[dag_id].deadline
    assert type(deadline.reference).__name__ == reference
    assert deadline.interval == timedelta(minutes=minutes)
    assert deadline.callback.path == "dataplatform.operators.deadlines.deadline_missed"
    assert f"{minutes} minutes" in deadline.callback.kwargs["meaning"]
    # What the scheduler reads: the serialized DAG keeps the deadline.
    serialized = DagSerialization.to_dict(dags[dag_id])["dag"]["deadline"]
    assert len(serialized) == 1 and str(minutes * 60) in str(serialized)


def test_zero_minutes_leaves_the_dag_without_a_deadline(tmp_path, monkeypatch):
    from dataplatform import config as config_module
    from dataplatform.operators.deadlines import dag_deadlines

    raw = yaml.safe_load(local_config_with_aws_deadlines(tmp_path).read_text())
    raw["health"]["deadlines"]["recon_stateless_behind_minutes"] = 0
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("DATAPLATFORM_CONFIG", str(path))
    config_module.settings.cache_clear()
    try:
        assert dag_deadlines("recon_stateless") == []
        assert len(dag_deadlines("benchmark_pricing")) == 1
    finally:
        monkeypatch.undo()
        config_module.settings.cache_clear()

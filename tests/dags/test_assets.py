"""Lineage: every DAG declares the objects it reads and writes as Assets named after the configured
objects, with the personal-data flag of ``gdpr.datasets``. The expected names are spelt out here from the
config, not taken from ``dataplatform.operators.assets``."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataplatform.config import settings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags


def declared(dag) -> tuple[dict[str, object], dict[str, object]]:
    """The DAG's inlets and outlets, by asset name."""
    inlets = {a.name: a for task in dag.tasks for a in task.inlets}
    outlets = {a.name: a for task in dag.tasks for a in task.outlets}
    return inlets, outlets


def s3(uri: str) -> str:
    return uri.rstrip("/")


def configured_objects() -> dict[str, bool]:
    """Every object of the config an asset may name -> whether it holds personal data."""
    config = settings()
    gdpr = config.gdpr
    personal_tables = {(d.database, d.table) for d in gdpr.datasets.values()}
    recon = config.reconciliation
    objects = {
        s3(recon.landing_uri): False,
        **{s3(recon.work_uri + part): False for part in ("stateless", "state", "stateful")},
        s3(config.iceberg.state_uri): False,
        s3(config.pricing.price_cache_uri): False,
        s3(gdpr.work_uri): True,  # the Spark erasure job specs name the subjects
        **{f"dynamodb://{name}": False for name in (recon.ledger_table, recon.index_table)},
        **{f"dynamodb://{name}": False for name in (gdpr.audit_table, config.pricing.launches_table)},
        f"dynamodb://{config.pricing.job_costs_table}": False,
        f"dynamodb://{config.health.findings_table}": False,
        f"dynamodb://{gdpr.requests_table}": True,  # each request's subject id
    }
    for table in config.glue.tables.values():
        objects[s3(table.location)] = False
        objects[f"glue://{table.database}/{table.table}"] = (table.database, table.table) in personal_tables
    for table in config.iceberg.tables.values():
        key = (table.database, table.table)
        objects[f"iceberg://{table.database}/{table.table}"] = key in personal_tables
    for dataset in gdpr.datasets.values():
        objects[f"{dataset.format}://{dataset.database}/{dataset.table}"] = True
    return objects


def test_every_dag_declares_what_it_reads_and_writes(dags):
    assert len(dags) == len(list((REPO / "dags").glob("*.py")))
    for dag_id, dag in dags.items():
        inlets, outlets = declared(dag)
        assert inlets, f"{dag_id} declares no inlets"
        assert outlets, f"{dag_id} declares no outlets"


def test_asset_names_are_the_configured_objects_with_their_personal_data_flag(dags):
    objects = configured_objects()
    seen = {}
    for dag_id, dag in dags.items():
        for name, asset in {**declared(dag)[0], **declared(dag)[1]}.items():
            assert name in objects, f"{dag_id}: asset {name} names no configured object"
            assert asset.uri.rstrip("/") == name, f"{dag_id}: {asset.uri} is not named {name}"
            assert asset.extra == {"personal_data": objects[name]}, f"{dag_id}: {name} {asset.extra}"
            seen[name] = dag_id
    # Every configured object is read or written by some DAG (the job cost table only on EMR).
    config = settings()
    assert set(objects) - set(seen) == {f"dynamodb://{config.pricing.job_costs_table}"}


def test_gdpr_erasure_writes_every_dataset_and_only_it_writes_personal_data(dags):
    gdpr = settings().gdpr
    datasets = {f"{d.format}://{d.database}/{d.table}" for d in gdpr.datasets.values()}
    _, outlets = declared(dags["gdpr_erasure"])
    assert datasets <= set(outlets)
    personal_writers = {
        dag_id
        for dag_id, dag in dags.items()
        if any(a.extra["personal_data"] for a in declared(dag)[1].values())
    }
    assert personal_writers == {"gdpr_erasure"}


def test_outlets_are_on_the_tasks_that_publish_the_data(dags):
    config = settings()
    outlets = {
        (dag_id, task.task_id): {a.name for a in task.outlets}
        for dag_id, dag in dags.items()
        for task in dag.tasks
    }
    glue = {f"glue://{t.database}/{t.table}" for t in config.glue.tables.values()}
    assert outlets["glue_partition_loader", "load_partitions"] == glue
    stateless = s3(config.reconciliation.work_uri + "stateless")
    # Only the commit publishes a group: an event from the Spark job would start recon_stateful early.
    assert [key for key, names in outlets.items() if stateless in names] == [
        ("recon_stateless", "commit_stateless")
    ]
    assert not any(names for (_, task_id), names in outlets.items() if task_id.endswith(".spark_submit"))


def test_recon_stateful_is_scheduled_on_the_artifacts_recon_stateless_commits(dags):
    stateless = s3(settings().reconciliation.work_uri + "stateless")
    schedule = dags["recon_stateful"].timetable.asset_condition
    assert [asset.name for asset in schedule.objects] == [stateless]

"""Helpers for tests that run DAGs built inside the test (not from dags/) with ``dag.test()``."""

from __future__ import annotations

from pathlib import Path

DAGS_DIR = Path(__file__).resolve().parents[1] / "dags"


def run_repo_dag(dag_id: str, **kwargs):
    """``dag.test(**kwargs)`` of ``dags/<dag_id>.py``, parsed afresh for every run (in-process rendering
    writes values back onto the tasks)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_DIR / f"{dag_id}.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(dag_id).test(**kwargs)


def task_states(dagrun) -> dict[str, str]:
    return {f"{ti.task_id}[{ti.map_index}]": ti.state for ti in dagrun.get_task_instances()}


def serialize_to_db(dag) -> None:
    """Write a DAG defined in a test to the metadata database, as the dag processor would.

    ``dag.test()`` in Airflow 3.3 re-parses the configured bundles (the repo's dags/) and refuses a DAG it
    finds no serialized version of; a DAG built inside a test is in no bundle.
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    DagBundlesManager().sync_bundles_to_db()
    with create_session() as session:
        update_dag_parsing_results_in_db(
            "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session=session
        )


def extra_links(dagrun, task_id: str, map_index: int = -1) -> dict[str, str | None]:
    """A task instance's extra links as the UI's REST API serves them: the serialized DAG's links (name
    -> XCom key), read from the run's XCom, where the worker stored them when the task ended."""
    from airflow.models.serialized_dag import SerializedDagModel

    task = SerializedDagModel.get_dag(dagrun.dag_id).get_task(task_id)
    ti = dagrun.get_task_instance(task_id, map_index=map_index)
    return {name: task.get_extra_links(ti, name) or None for name in task.extra_links}

"""Helpers for tests that run DAGs built inside the test (not from dags/) with ``dag.test()``."""

from __future__ import annotations


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

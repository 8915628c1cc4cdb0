"""A missed Airflow deadline reaches people as an alert, through Airflow's own deadline machinery: the
repo's ``recon_stateless`` serialized to the metadata database (as the DAG processor does), a run created
for a logical date long past (its deadline, logical date + ``health.deadlines.recon_stateless_behind_minutes``,
is recorded when the run is created and has passed), the scheduler's step for expired deadlines
(``Deadline.handle_miss``: the callback queued as a trigger), then the trigger the triggerer would run,
built from the stored row. The scheduler and triggerer loops themselves are not started (each is a
long-running process); the steps they run are."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dataplatform.config import settings
from dataplatform.devstack.seed import receive_alerts, seed_alert_topic
from tests.airflow_helpers import serialize_to_db
from tests.deadline_config import local_config_with_aws_deadlines

pytestmark = pytest.mark.integration

DAGS = Path(__file__).resolve().parents[2] / "dags"
DAG_ID = "recon_stateless"
LOGICAL_DATE = datetime(2024, 1, 2, 3, 0, tzinfo=UTC)


def missed_deadline_triggers(run_id: str) -> list:
    """Create the run, then do what the scheduler does with deadlines that passed: ``handle_miss``; the
    triggers queued for the triggerer, rebuilt from their rows as the triggerer builds them."""
    from airflow._shared.module_loading import import_string
    from airflow.models.deadline import Deadline
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from sqlalchemy import select

    with create_session() as session:
        dag = SerializedDagModel.get_dag(DAG_ID, session=session)
        run = dag.create_dagrun(
            run_id=run_id,
            logical_date=LOGICAL_DATE,
            data_interval=(LOGICAL_DATE, LOGICAL_DATE),
            run_after=LOGICAL_DATE,
            run_type=DagRunType.SCHEDULED,
            triggered_by=DagRunTriggeredByType.TEST,
            state=DagRunState.RUNNING,
            session=session,
        )
        session.flush()
        (deadline,) = session.scalars(select(Deadline).where(Deadline.dagrun_id == run.id)).all()
        minutes = settings().health.deadlines.recon_stateless_behind_minutes
        assert deadline.deadline_time == LOGICAL_DATE + timedelta(minutes=minutes)
        expired = select(Deadline).where(
            Deadline.dagrun_id == run.id, Deadline.deadline_time < datetime.now(UTC), ~Deadline.missed
        )
        for expired_deadline in session.scalars(expired).all():
            expired_deadline.handle_miss(session)
        session.flush()
        rows = [deadline.callback.trigger for deadline in session.scalars(select(Deadline)).all()]
        rows = [row for row in rows if row is not None]
        return [import_string(row.classpath)(**row.kwargs) for row in rows]


async def run_trigger(trigger) -> list:
    return [event async for event in trigger.run()]


@pytest.fixture
def deadlines_on(tmp_path, monkeypatch):
    """The config with aws.yaml's deadlines (local.yaml leaves them off: tests/deadline_config.py)."""
    monkeypatch.setenv("DATAPLATFORM_CONFIG", str(local_config_with_aws_deadlines(tmp_path)))
    settings.cache_clear()
    yield
    monkeypatch.undo()
    settings.cache_clear()


def test_a_missed_deadline_alerts_through_the_triggerer_callback(moto_server, airflow_db, deadlines_on):
    from airflow.dag_processing.dagbag import DagBag

    from dataplatform import aws

    moto_server.reset()
    sqs = aws.client("sqs")
    queue = seed_alert_topic(aws.client("sns"), sqs, settings().alerts.sns_topic_arn)
    bag = DagBag(dag_folder=str(DAGS / f"{DAG_ID}.py"))
    serialize_to_db(bag.dags[DAG_ID])

    (trigger,) = missed_deadline_triggers("scheduled__deadline_test")
    events = asyncio.run(run_trigger(trigger))

    assert events and "success" in str(events[-1].payload).lower(), events
    (alert,) = receive_alerts(sqs, queue)
    minutes = settings().health.deadlines.recon_stateless_behind_minutes
    assert (
        alert["subject"]
        == f"[local] {DAG_ID}: DEADLINE MISSED: reconciliation more than {minutes} minutes behind"
    )
    assert "Run: scheduled__deadline_test" in alert["message"]
    assert f"deadline {LOGICAL_DATE + timedelta(minutes=minutes)}" in alert["message"].replace("T", " ")

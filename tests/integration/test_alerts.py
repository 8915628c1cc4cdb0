"""DAG alerts end to end: real ``dag.test()`` runs of the repo's DAGs, the alerts read back from the SQS
queue subscribed to the SNS topic on the moto server (what `make demo` shows). Cheap DAGs only: the Glue
loader in discover mode with one of its two tables missing from the catalog (a retriable error: that task
retries, then fails for good, while the other table registers and writes its report), and the GDPR DAG
failing in its first task (an unknown dataset) with subject ids in its conf."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from dataplatform.config import settings
from dataplatform.devstack.faults import FaultPlan
from dataplatform.devstack.seed import create_table, receive_alerts, seed_alert_topic, seed_demo
from tests.airflow_helpers import run_repo_dag, task_states

pytestmark = pytest.mark.integration

GLUE = "glue_partition_loader"
GDPR = "gdpr_erasure"
DAY = datetime(2024, 3, 5, tzinfo=UTC)
# Subject ids in the trigger conf of a failing GDPR run: no alert may quote them.
SUBJECTS = ["cust-314159", "cust-271828"]


@pytest.fixture
def alert_queue(aws, airflow_db, monkeypatch):
    """The alert topic with its queue on a fresh moto; a callable reading (and consuming) the alerts.
    Retry delays are cut to milliseconds: the number of retries stays the DAG's own."""
    monkeypatch.setenv("DATAPLATFORM_RETRY_DELAY_SCALE", "0.0001")
    sqs = aws.client("sqs")
    url = seed_alert_topic(aws.client("sns"), sqs, settings().alerts.sns_topic_arn)
    return lambda: receive_alerts(sqs, url)


@pytest.fixture
def lake_without_cloudtrail(aws):
    """Two days of the demo lake, the cloudtrail table dropped from the catalog (its files stay)."""
    seed_demo(aws.s3, aws.glue, settings(), start=datetime(2024, 3, 1), days=2)
    table = settings().glue.tables["cloudtrail"]
    aws.glue.delete_table(DatabaseName=table.database, Name=table.table)
    return aws


def glue_discover(day: datetime):
    return run_repo_dag(GLUE, logical_date=day, run_conf={"mode": "discover"})


def fields(alert: dict) -> dict[str, str]:
    """The ``Key: value`` lines of an alert's message, the indented summary lines as ``Summary``."""
    lines = alert["message"].splitlines()[1:]
    got = dict(line.split(": ", 1) for line in lines if ": " in line and not line.startswith(" "))
    summary = [line.strip() for line in lines if line.startswith("  ")]
    return {**got, "Summary": " | ".join(summary)} if summary else got


def kinds(alerts: list[dict]) -> list[str]:
    return sorted(alert["subject"].split(": ", 1)[1] for alert in alerts)


def test_a_failed_run_alerts_once_per_event_and_the_next_success_once_as_recovery(
    alert_queue, lake_without_cloudtrail
):
    aws = lake_without_cloudtrail
    failed = glue_discover(DAY)
    assert failed.state == "failed", task_states(failed)
    (cloudtrail,) = [ti for ti in failed.get_task_instances() if ti.state == "failed"]
    assert cloudtrail.rendered_map_index == "cloudtrail"
    assert cloudtrail.try_number == 3  # two retries, then failed for good
    mapped = f"load_partitions[{cloudtrail.map_index}]"

    alerts = alert_queue()
    # One message per event: the task that failed (not one per try) and the run.
    assert kinds(alerts) == ["run FAILED", "task FAILED after its retries"], alerts
    for alert in alerts:
        got = fields(alert)
        assert alert["subject"].startswith(f"[local] {GLUE}: ")
        assert got["DAG"] == GLUE
        assert got["Run"] == failed.run_id
        assert got["Task"] == mapped
        assert got["Try"] == "3 of 3"
        # The summary of the report the other table's task wrote for this run.
        assert got["Summary"].startswith("web_events: "), got
        assert "registered 48 partitions" in got["Summary"]  # 2 days x 24 hours
        # The failed try's log in the UI, under the configured base URL.
        assert got["Log"].startswith("http://localhost:8080/dags/glue_partition_loader/runs/")
        assert got["Log"].endswith(f"/tasks/load_partitions/mapped/{cloudtrail.map_index}?try_number=3")

    create_table(aws.glue, settings().glue.tables["cloudtrail"])
    recovered = glue_discover(DAY + timedelta(days=1))
    assert recovered.state == "success", task_states(recovered)
    alerts = alert_queue()
    assert kinds(alerts) == ["RECOVERED: first success after a failed run"], alerts
    got = fields(alerts[0])
    assert got["Run"] == recovered.run_id
    assert "Task" not in got and "Try" not in got
    assert got["Summary"].startswith("cloudtrail: ") and " | web_events: " in got["Summary"], got
    assert got["Log"].endswith(
        "/dags/glue_partition_loader/runs/" + recovered.run_id.replace(":", "%3A").replace("+", "%2B")
    )

    # Recovery once: the next success follows a success.
    again = glue_discover(DAY + timedelta(days=2))
    assert again.state == "success"
    assert alert_queue() == []


def test_no_alert_quotes_the_subject_ids_of_the_run(alert_queue):
    failed = run_repo_dag(GDPR, run_conf={"subject_ids": SUBJECTS, "datasets": ["no_such_dataset"]})
    assert failed.state == "failed"
    alerts = alert_queue()
    # accept_requests refused the dataset; finish_requests (all done) found no claim to finish.
    assert kinds(alerts) == ["run FAILED", *["task FAILED after its retries"] * 2], alerts
    assert {fields(alert)["Task"] for alert in alerts} == {"accept_requests", "finish_requests"}
    for alert in alerts:
        text = alert["subject"] + "\n" + alert["message"]
        for subject_id in SUBJECTS:
            assert subject_id not in text
        assert "cust-" not in text and "no_such_dataset" not in text  # neither conf nor exception text


def failing_glue_run():
    """A run that fails in its first task, without retries (an unknown table)."""
    run = run_repo_dag(GLUE, logical_date=DAY, run_conf={"table": "no_such_table", "mode": "discover"})
    assert run.state == "failed"
    assert task_states(run)["select_tables[-1]"] == "failed"
    return run


def lost_alerts(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().endswith("alert not sent")]


def test_a_publish_that_fails_is_retried_logged_and_leaves_the_run_as_it_was(alert_queue, aws, caplog):
    aws.server.set_faults(FaultPlan(rate=1.0, kinds=("connection_reset",), services=("sns",)))
    aws.server.reset_fault_stats()
    try:
        with caplog.at_level(logging.WARNING, logger="dataplatform.alerts"):
            failing_glue_run()
        stats = aws.server.fault_stats()
    finally:
        aws.server.set_faults(None)
    attempts = settings().alerts.publish_attempts
    lost = lost_alerts(caplog)
    retried = [r.getMessage() for r in caplog.records if r.getMessage().endswith("; retrying")]
    # The task's alert and the run's: each tried publish_attempts times, then given up once.
    assert sorted(message.split(" of ")[0] for message in lost) == ["alert run_failed", "alert task_failed"]
    assert all(f"attempt {attempts}/{attempts}" in message for message in lost), lost
    assert len(retried) == 2 * (attempts - 1), retried
    # Each attempt's call reached the endpoint and was cut (botocore tries each call twice).
    assert stats["requests_by_service"]["sns"] == 2 * attempts * 2, stats
    assert alert_queue() == []


def test_a_deleted_topic_is_logged_and_a_successful_run_stays_successful(alert_queue, aws, caplog):
    failing_glue_run()
    assert len(alert_queue()) == 2
    aws.client("sns").delete_topic(TopicArn=settings().alerts.sns_topic_arn)
    seed_demo(aws.s3, aws.glue, settings(), start=datetime(2024, 3, 1), days=1)
    with caplog.at_level(logging.WARNING, logger="dataplatform.alerts"):
        succeeded = glue_discover(DAY + timedelta(days=1))
    assert succeeded.state == "success", task_states(succeeded)
    lost = lost_alerts(caplog)
    # The recovery alert: refused (no such topic), not retried (it would be refused again), logged.
    assert len(lost) == 1 and "recovered" in lost[0] and "attempt 1/" in lost[0], lost

"""What an alert says and how a publish is retried (``dataplatform.alerts``); the end to end runs are in
tests/integration/test_alerts.py."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from dataplatform import alerts
from dataplatform.config import CONFIG_DIR, load_settings

pytestmark = pytest.mark.unit


def _alert(**overrides) -> alerts.Alert:
    values = dict(
        event=alerts.TASK_FAILED,
        env="local",
        dag_id="gdpr_erasure",
        run_id="scheduled__2026-12-01T03:00:00+00:00",
        task_id="erase_iceberg",
        map_index=1,
        try_number=3,
        max_tries=2,
        log_url="http://ui/dags/gdpr_erasure/runs/x/tasks/erase_iceberg/mapped/1?try_number=3",
        summaries=["customer_profiles: failed for 2 requests\n  pinned refs audit-tag", "payments: done"],
    )
    return alerts.Alert(**{**values, **overrides})


def test_a_message_names_dag_run_task_try_log_and_the_summaries_line_by_line():
    text = alerts.message(_alert())
    assert text.splitlines() == [
        "gdpr_erasure: task FAILED after its retries (local)",
        "DAG: gdpr_erasure",
        "Run: scheduled__2026-12-01T03:00:00+00:00",
        "Task: erase_iceberg[1]",
        "Try: 3 of 3",
        "Log: http://ui/dags/gdpr_erasure/runs/x/tasks/erase_iceberg/mapped/1?try_number=3",
        "Summary:",
        "  customer_profiles: failed for 2 requests",
        "    pinned refs audit-tag",
        "  payments: done",
    ]
    assert alerts.subject(_alert()) == "[local] gdpr_erasure: task FAILED after its retries"


def test_a_run_alert_without_task_or_report_says_so_and_long_summaries_are_cut():
    text = alerts.message(_alert(event=alerts.RECOVERED, task_id=None, try_number=None, summaries=[]))
    assert "Task:" not in text and "Try:" not in text
    assert text.endswith("Summary: (no report written)")
    many = alerts.message(_alert(summaries=[f"table_{n}: ok" for n in range(100)]))
    assert many.count("\n  table_") == alerts.MAX_SUMMARY_LINES
    assert many.endswith(f"and {100 - alerts.MAX_SUMMARY_LINES} more lines in the run's reports")


def test_the_subject_is_one_line_of_at_most_100_characters():
    subject = alerts.subject(_alert(dag_id="d" * 150 + "\nx"))
    assert len(subject) == alerts.SUBJECT_LIMIT and "\n" not in subject


def test_subject_ids_of_the_conf_are_redacted_longest_first():
    secrets = alerts.conf_secrets({"subject_ids": ["cust-000001", "cust-0000012"], "datasets": ["payments"]})
    assert alerts.redact("a cust-0000012 b cust-000001", secrets) == "a [redacted] b [redacted]"
    assert alerts.conf_secrets({"datasets": ["payments"]}) == [] and alerts.conf_secrets(None) == []


def test_an_unknown_event_is_refused():
    with pytest.raises(ValueError, match="unknown alert event"):
        _alert(event="late")


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Publish")


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (_client_error("Throttling", 400), True),
        (_client_error("InternalError", 500), True),
        (EndpointConnectionError(endpoint_url="http://x"), True),
        (_client_error("NotFound", 404), False),
        (_client_error("AuthorizationError", 403), False),
        (_client_error("InvalidParameter", 400), False),
    ],
)
def test_only_throttles_5xx_and_lost_connections_are_worth_a_retry(error, transient):
    assert alerts.is_transient(error) is transient


def test_a_publish_is_retried_a_bounded_number_of_times_and_never_raises(caplog):
    calls, sleeps = [], []

    def failing():
        calls.append(1)
        raise _client_error("Throttling", 400)

    assert alerts.publish_with_retries(failing, 3, "run_failed of d r", sleep=sleeps.append) is False
    assert len(calls) == 3 and sleeps == [1.0, 2.0]
    assert "alert not sent" in caplog.text

    calls.clear()

    def refused():
        calls.append(1)
        raise _client_error("NotFound", 404)

    assert alerts.publish_with_retries(refused, 3, "x", sleep=sleeps.append) is False
    assert len(calls) == 1  # a refusal is not retried

    outcomes = iter([_client_error("InternalError", 500), None])

    def flaky():
        if (error := next(outcomes)) is not None:
            raise error

    assert alerts.publish_with_retries(flaky, 3, "x", sleep=lambda _: None) is True


def test_the_alert_config_of_each_environment():
    assert load_settings(CONFIG_DIR / "local.yaml").alerts.sns_topic_arn.endswith(":dataplatform-alerts")
    # The AWS example has no topic yet: alerts are logged only until one is set.
    assert load_settings(CONFIG_DIR / "aws.yaml").alerts.sns_topic_arn == ""


def test_a_previous_runs_state_reads_the_same_from_the_task_sdk_and_the_core():
    """The DAG processor's answer holds the task SDK's ``DagRunState`` (``str()``: "DagRunState.FAILED"):
    read as "failed", or no recovery is ever announced under a scheduler (found by the e2e test)."""
    from airflow.sdk.api.datamodels._generated import DagRunState as SdkDagRunState
    from airflow.utils.state import DagRunState

    from dataplatform.operators.notifiers import state_name

    assert str(SdkDagRunState.FAILED) != "failed"
    assert (
        state_name(SdkDagRunState.FAILED)
        == state_name(DagRunState.FAILED)
        == state_name("failed")
        == "failed"
    )

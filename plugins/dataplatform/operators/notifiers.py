"""The DAG alerts as Airflow notifiers: the one place every DAG gets them from.

``dag_alerts()`` goes into each ``@dag(...)`` (a failed run; a recovery) and ``task_alerts()`` into each
DAG's ``default_args`` (a task that failed for good). Airflow calls ``on_failure_callback`` of a task only
when it has no retry left (a retry calls ``on_retry_callback``, which sends nothing), so one task failure
is one message however many tries it took.

**Recovery**: the DAG's ``on_success_callback`` asks the metadata database, through the callback context,
for the run before this one (``ti.get_previous_dagrun()``: the latest run of the DAG with an earlier logical
date, in any state) and alerts when that run failed. In the DAG processor the question goes through the
task SDK's channel to its supervisor, as every callback reaches the database in Airflow 3; under
``dag.test()`` / ``airflow dags test`` the callback runs in the process that drives the run, which has no
such channel but holds the database session: the execution API's own route function answers it there.
Runs without a logical date (asset-triggered runs) have no previous run in that sense: their recovery is
not announced. Whatever goes wrong while building or sending an alert is logged, never raised.

What a message says, and the bounded retries of a publish, are ``dataplatform.alerts``'s.
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import Any

from airflow.providers.amazon.aws.hooks.sns import SnsHook
from airflow.providers.amazon.aws.notifications.sns import SnsNotifier
from botocore.config import Config

from dataplatform import alerts
from dataplatform.config import settings

log = logging.getLogger(__name__)


class LakeAlertNotifier(SnsNotifier):
    """The provider's SNS notifier, its message built from the callback context when it fires and its
    publish retried and never raised (``alerts.publish_with_retries``). With ``alerts.sns_topic_arn``
    empty it only logs the message."""

    def __init__(self, event: str, **kwargs: Any) -> None:
        if event not in alerts.EVENTS:
            raise ValueError(f"unknown alert event {event!r}")
        # Topic, connection and text are set when the notifier fires: the config is read then, as every
        # task reads it, and the message comes from the context.
        super().__init__(target_arn="", message="", **kwargs)
        self.event = event

    @cached_property
    def hook(self) -> SnsHook:
        config = settings()
        return sns_hook(config.aws.conn_id, config.aws.region)

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """Nothing to render: the text is built from the context when the notifier fires, so a run id or
        a summary holding ``{{ }}`` is never evaluated. (Airflow's rendering also needs the SDK DAG, which
        ``dag.test()`` does not put in a DAG callback's context.)"""

    def notify(self, context: Any) -> None:
        try:
            if self.event == alerts.RECOVERED and previous_run_state(context) != "failed":
                return
            alert = build_alert(self.event, context)
            self.send(alert, alerts.conf_secrets(_conf(context)))
        except Exception:  # an alert must never fail the run it reports on
            log.exception("alert %s of %s not sent: building it failed", self.event, context.get("run_id"))

    def send(self, alert: alerts.Alert, secrets: list[str]) -> bool:
        return publish_alert(alert, secrets, self.hook)


def publish_alert(alert: alerts.Alert, secrets: list[str] | None = None, hook: SnsHook | None = None) -> bool:
    """The one way an alert is sent, by the notifiers, the deadline callbacks and ``lake_health``: its
    subject and text (``secrets`` redacted) published to ``alerts.sns_topic_arn`` through the provider's
    SNS hook, retried by ``alerts.publish_with_retries``, never raised. With the topic empty it is logged
    only. True when it was delivered as configured (published, or logged for want of a topic)."""
    config = settings()
    subject = alerts.redact(alerts.subject(alert), secrets or [])
    text = alerts.redact(alerts.message(alert), secrets or [])
    what = f"{alert.event} of {alert.dag_id} {alert.run_id}"
    topic = config.alerts.sns_topic_arn
    if not topic:
        log.warning("alert (alerts.sns_topic_arn is empty: logged only): %s\n%s", subject, text)
        return True
    log.info("alert %s to %s: %s", what, topic, subject)
    hook = hook or sns_hook(config.aws.conn_id, config.aws.region)
    return alerts.publish_with_retries(
        lambda: hook.publish_to_target(target_arn=topic, message=text, subject=subject),
        config.alerts.publish_attempts,
        what,
    )


def sns_hook(conn_id: str, region: str | None) -> SnsHook:
    # The retries are ``publish_with_retries``'s, bounded by alerts.publish_attempts: botocore tries each
    # attempt's call twice at most (its default would be five times, with waits of up to 8 s).
    return SnsHook(
        aws_conn_id=conn_id,
        region_name=region,
        config=Config(retries={"mode": "standard", "total_max_attempts": 2}),
    )


def dag_alerts() -> dict[str, Any]:
    """``@dag`` keyword arguments: alert on a failed run and on the first success after a failed one."""
    return {
        "on_failure_callback": [LakeAlertNotifier(alerts.RUN_FAILED)],
        "on_success_callback": [LakeAlertNotifier(alerts.RECOVERED)],
    }


def task_alerts() -> dict[str, Any]:
    """``default_args`` entries: alert on a task that failed after its last retry."""
    return {"on_failure_callback": [LakeAlertNotifier(alerts.TASK_FAILED)]}


def build_alert(event: str, context: Any) -> alerts.Alert:
    """The alert of ``event`` from a task or DAG callback context: the task instance (the failed task, or
    the one that ended the run) when the context has one, the summaries of the run's reports."""
    ti = context.get("ti")
    dag_id = ti.dag_id if ti is not None else context["dag"].dag_id
    run_id = ti.run_id if ti is not None else context["run_id"]
    # The run's outcome is what matters on a recovery; the last task to succeed says little.
    task = ti if event != alerts.RECOVERED else None
    return alerts.Alert(
        event=event,
        env=settings().env,
        dag_id=dag_id,
        run_id=run_id,
        task_id=task.task_id if task is not None else None,
        map_index=task.map_index if task is not None else None,
        try_number=task.try_number if task is not None else None,
        max_tries=task.max_tries if task is not None else None,
        log_url=task.log_url if task is not None else alerts.run_url(ui_base_url(), dag_id, run_id),
        summaries=run_summaries(dag_id, run_id),
    )


def run_summaries(dag_id: str, run_id: str) -> list[str]:
    """The summaries of the run's reports; none (logged) when they cannot be read."""
    from dataplatform import aws
    from dataplatform.reports import run_reports

    try:
        return alerts.summaries(run_reports(settings().reports_uri, dag_id, run_id, aws.client("s3")))
    except Exception as exc:  # the alert goes out without them
        log.warning("alert: the reports of %s %s could not be read (%s)", dag_id, run_id, exc)
        return []


def previous_run_state(context: Any) -> str | None:
    """The state of the DAG's run before this one (by logical date, in any state), None when there is
    none or it cannot be told (no task instance or no logical date in the context)."""
    ti = context.get("ti")
    dag_run = context.get("dag_run")
    if ti is None or dag_run is None or getattr(dag_run, "logical_date", None) is None:
        log.info("alert: no logical date or task instance in the context; recovery not checked")
        return None
    from airflow.sdk.execution_time import task_runner

    if hasattr(task_runner, "SUPERVISOR_COMMS"):
        # The DAG processor (and a worker): the metadata database through the supervisor's channel.
        previous = ti.get_previous_dagrun()
    else:
        # ``dag.test()`` / ``airflow dags test`` run DAG callbacks in the process that drives the run,
        # which holds the database session and has no supervisor: the same query, from the execution
        # API's own route, on that session.
        from airflow.api_fastapi.execution_api.routes.dag_runs import get_previous_dagrun
        from airflow.utils.session import create_session

        with create_session() as session:
            previous = get_previous_dagrun(dag_run.dag_id, dag_run.logical_date, session)
    if previous is None:
        log.info("alert: %s has no run before %s; no recovery", dag_run.dag_id, dag_run.logical_date)
        return None
    return state_name(previous.state)


def state_name(state: Any) -> str:
    """``"failed"`` for a run state from either side: the supervisor's answer holds the task SDK's
    generated ``DagRunState``, whose ``str()`` is ``"DagRunState.FAILED"`` (the core enum's is
    ``"failed"``); found by the e2e test of a recovery under a scheduler."""
    return str(getattr(state, "value", state))


def _conf(context: Any) -> dict:
    dag_run = context.get("dag_run")
    return (getattr(dag_run, "conf", None) or {}) if dag_run is not None else {}


def ui_base_url() -> str:
    # The UI's address, as Airflow builds a task's log URL from it.
    from airflow.configuration import conf

    return conf.get("api", "base_url", fallback="http://localhost:8080/")

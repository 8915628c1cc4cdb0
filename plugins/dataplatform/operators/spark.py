"""Airflow tasks for a ``SparkJob`` (``dataplatform.spark``) on the configured backend.

``spark_job_tasks(job)`` returns a TaskGroup named after the job, so a DAG reads
``extract >> spark_job_tasks(job) >> load``:

- ``local``: one ``spark_submit`` task (``LocalSparkSubmitOperator``), the job's output streamed into the
  task log.
- ``emr`` with ``spark.emr.cluster_id``: one ``run_step`` task that adds the step and waits for it,
  deferred.
- ``emr`` without a cluster id: ``run_on_cluster >> terminate_cluster``. ``run_on_cluster``
  (``EmrTransientClusterOperator``) creates the cluster with the step in its RunJobFlow request, so the
  cluster ends with the step, and waits deferred until it has terminated: one task as long as the
  cluster. ``terminate_cluster`` is a teardown, so the cluster goes also when the task is killed or times
  out (a no-op on a cluster that ended by itself).
- ``emr_serverless``: one ``start_job_run`` task, deferred, that cancels the job run when killed.

The task that runs the job from its start to its end (``spark_submit``, ``start_job_run``, ``run_step`` on
the configured cluster) takes a slot of the ``spark_jobs`` pool; ``run_on_cluster`` takes a slot of
``emr_transient_clusters`` instead, which so caps the transient clusters alive at once
(``dataplatform.pools``).

On EMR and EMR Serverless a ``record_cost`` teardown ends the group: the job run's cost record
(``dataplatform.pricing.jobs``), so every Spark job the platform runs in AWS has a price. Local runs are
not billed and get none.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from airflow.providers.amazon.aws.links.emr import EmrClusterLink
from airflow.providers.amazon.aws.operators.emr import (
    EmrAddStepsOperator,
    EmrCreateJobFlowOperator,
    EmrServerlessStartJobOperator,
    EmrTerminateJobFlowOperator,
)
from airflow.providers.amazon.aws.triggers.emr import EmrCreateJobFlowTrigger
from airflow.providers.amazon.aws.utils import validate_execute_complete_event
from airflow.providers.amazon.aws.utils.waiter import WAITER_POLICY_NAME_MAPPING, WaitPolicy
from airflow.sdk import Asset, BaseOperator, TaskGroup
from airflow.sdk.exceptions import AirflowException, AirflowSkipException

from dataplatform import spark
from dataplatform.aws import RETRY_CONFIG
from dataplatform.config import SparkSettings, settings
from dataplatform.operators import assets
from dataplatform.operators.links import EmrJobLink
from dataplatform.pools import EMR_TRANSIENT_CLUSTERS, SPARK_JOBS


class LocalSparkSubmitOperator(BaseOperator):
    """Run ``spark-submit`` on this worker; its output goes to the task log line by line.

    The job runs with ``spark.local_conf``: the locked jars that stand in for EMR's (checked before Spark
    starts: a missing or corrupt one fails the task naming it) and S3A against the endpoint of the AWS
    connection ``aws_conn_id``, whose credentials reach spark-submit in its environment, not its argv.

    A non-zero exit fails the task with the exit code and the last ``tail_lines`` lines of output. The
    process runs in its own process group, which ``on_kill`` terminates (spark-submit's JVM and the Python
    workers it starts included).
    """

    template_fields: Sequence[str] = ("application", "application_args", "conf")
    template_fields_renderers = {"conf": "json", "application_args": "json"}
    ui_color = "#fde2c4"

    def __init__(
        self,
        *,
        application: str,
        application_args: Sequence[str] = (),
        conf: Mapping[str, str] | None = None,
        master: str = "local[*]",
        spark_submit: str | None = None,
        aws_conn_id: str | None = "aws_default",
        region_name: str = "us-east-1",
        tail_lines: int = 40,
        kill_timeout: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.application = application
        self.application_args = list(application_args)
        self.conf = dict(conf or {})
        self.master = master
        self.spark_submit = spark_submit
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.tail_lines = tail_lines
        self.kill_timeout = kill_timeout
        self._process: subprocess.Popen | None = None

    def execute(self, context: Any) -> None:
        from dataplatform import aws
        from dataplatform.spark_jars import JarError

        endpoint_url = aws.endpoint_url(self.aws_conn_id) if self.aws_conn_id else None
        credentials = aws.explicit_credentials(self.aws_conn_id) if self.aws_conn_id else None
        try:
            conf = spark.local_conf(self.conf, endpoint_url, self.region_name)
        except JarError as exc:
            raise AirflowException(f"spark-submit of {self.application} not started: {exc}") from None
        argv = spark.local_spark_submit_command(
            spark_submit=self.spark_submit,
            master=self.master,
            conf=conf,
            application=self.application,
            application_args=self.application_args,
        )
        self.log.info("Running: %s", shlex.join(argv))
        tail: deque[str] = deque(maxlen=self.tail_lines)
        lines = 0
        self._process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=spark.local_spark_env(
                os.environ, credentials=credentials, region=self.region_name, endpoint_url=endpoint_url
            ),
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,
        )
        assert self._process.stdout is not None
        for raw in self._process.stdout:
            line = raw.rstrip("\n")
            lines += 1
            tail.append(line)
            self.log.info("%s", line)
        exit_code = self._process.wait()
        if exit_code != 0:
            raise AirflowException(
                f"spark-submit of {self.application} exited with code {exit_code}; "
                f"last {len(tail)} of {lines} lines of output:\n" + "\n".join(tail)
            )
        self.log.info(
            "spark-submit of %s finished (exit code 0, %d lines of output)", self.application, lines
        )

    def on_kill(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        self.log.info("Terminating spark-submit (process group %d)", process.pid)
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=self.kill_timeout)
        except subprocess.TimeoutExpired:
            self.log.warning("spark-submit ignored SIGTERM for %.0fs: killing it", self.kill_timeout)
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


ENDED_CLUSTER_STATES = ("TERMINATED", "TERMINATED_WITH_ERRORS")


class EmrTransientClusterOperator(EmrCreateJobFlowOperator):
    """Run a job's step on an EMR cluster of its own, in one task that lives exactly as long as the cluster.

    ``job_flow_overrides`` is the whole RunJobFlow request (``spark.transient_cluster_config``): it carries
    the step and lets the cluster end with it. The task creates the cluster, then waits deferred (the
    provider's ``job_flow_terminated`` waiter) until it has terminated; so a pool slot this task holds,
    deferred too, is one cluster alive. It then reads the steps (ListSteps) and succeeds only when every
    step COMPLETED, whatever the cluster's final state says; otherwise it fails naming each step, its
    state and failure reason.

    The cluster id is pushed as the task's return value as soon as the cluster exists: a task that fails
    returns nothing, and the teardown that terminates the cluster, and the cost record, must still find it.
    """

    def __init__(self, **kwargs: Any) -> None:
        # The request is complete as it is: no EMR connection merges hidden defaults into it.
        super().__init__(emr_conn_id=None, **kwargs)
        self._job_flow_id: str | None = None  # on_kill (the provider's) terminates it once set

    def execute(self, context: Any) -> None:
        cluster_id = self.hook.create_job_flow(self.job_flow_overrides)["JobFlowId"]
        self._job_flow_id = cluster_id
        context["ti"].xcom_push(key="return_value", value=cluster_id)
        self.log.info("EMR cluster %s created with its step; waiting until it has terminated", cluster_id)
        EmrClusterLink.persist(
            context=context,
            operator=self,
            region_name=self.hook.conn_region_name,
            aws_partition=self.hook.conn_partition,
            job_flow_id=cluster_id,
        )
        self.defer(
            trigger=EmrCreateJobFlowTrigger(
                job_flow_id=cluster_id,
                aws_conn_id=self.aws_conn_id,
                waiter_delay=self.waiter_delay,
                waiter_max_attempts=self.waiter_max_attempts,
                waiter_name=WAITER_POLICY_NAME_MAPPING[WaitPolicy.WAIT_FOR_STEPS_COMPLETION],
            ),
            method_name="execute_complete",
            # Past the waiter's own limit the task fails, and the teardown terminates the cluster.
            timeout=timedelta(seconds=self.waiter_max_attempts * self.waiter_delay + 60),
        )

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> str:
        event = validate_execute_complete_event(event)
        cluster_id = event["job_flow_id"]
        # The waiter fails on TERMINATED_WITH_ERRORS (a failed step) and on its time limit: either way the
        # steps say what happened.
        steps = self.hook.conn.list_steps(ClusterId=cluster_id)["Steps"]
        problem = spark.unfinished_steps(cluster_id, steps)
        if problem:
            waited = "" if event["status"] == "success" else f" (waiting for the cluster: {event['message']})"
            raise AirflowException(problem + waited)
        self.log.info("EMR cluster %s terminated after its step completed", cluster_id)
        return cluster_id


class EmrTerminateClusterOperator(EmrTerminateJobFlowOperator):
    """Terminate the transient cluster ``job_flow_id`` (a teardown: after a failed, killed or timed-out
    ``run_on_cluster`` too). A cluster that has already ended is left as it is (its end time and state
    stay EMR's); skipped when no cluster was created (RunJobFlow failed, or the job's task never ran)."""

    def execute(self, context: Any) -> None:
        if not self.job_flow_id:
            raise AirflowSkipException("no EMR cluster was created: nothing to terminate")
        status = self.hook.conn.describe_cluster(ClusterId=self.job_flow_id)["Cluster"]["Status"]
        if status["State"] in ENDED_CLUSTER_STATES:
            self.log.info("EMR cluster %s has already ended (%s)", self.job_flow_id, status["State"])
            return
        super().execute(context)


class SparkJobCostOperator(BaseOperator):
    """Write the cost record of the group's job run (``dataplatform.pricing.jobs``): a teardown, so it
    runs when the job fails too (a failed job is billed as well) and never decides the run's state.

    ``job_task_id``: the task that ran the job; its XCom (step ids, job run id) names the run. A task
    that failed returned nothing, so then the step or job run is looked up by ``job_name`` among those
    created since this DAG run started."""

    template_fields: Sequence[str] = ("cluster_id",)
    ui_color = "#e8f4d4"
    operator_extra_links = (EmrJobLink(),)

    def __init__(
        self,
        *,
        backend: str,
        region_name: str,
        job_name: str,
        job_task_id: str | None = None,
        cluster_id: Any = None,
        application_id: str | None = None,
        sizing: spark.SparkSizing | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**{"outlets": [assets.spark_job_costs()], **kwargs})
        self.backend = backend
        self.region_name = region_name
        self.job_name = job_name
        self.job_task_id = job_task_id
        self.cluster_id = cluster_id
        self.application_id = application_id
        self.sizing = sizing

    def execute(self, context: Any) -> dict:
        from dataplatform.operators.pricing import record_spark_job_cost

        if self.backend == "emr" and not self.job_task_id and not self.cluster_id:
            raise AirflowSkipException("no transient EMR cluster was created: nothing ran, nothing billed")

        return record_spark_job_cost(
            context,
            self.backend,
            self.region_name,
            self.job_name,
            job_task_id=self.job_task_id,
            cluster_id=self.cluster_id,
            application_id=self.application_id,
            sizing=self.sizing,
        )


def spark_job_tasks(
    job: spark.SparkJob,
    spark_settings: SparkSettings | None = None,
    aws_conn_id: str | None = None,
    region_name: str | None = None,
    inlets: Sequence[Asset] = (),
) -> TaskGroup:
    """The tasks that run ``job`` on the configured backend, in a TaskGroup whose id is ``job.name``.
    ``inlets``: the assets the job reads (``dataplatform.operators.assets``), declared on the task that
    runs it; what it writes is published, as an outlet, by the task after the group.

    Call it inside a DAG context. Unset arguments come from ``dataplatform.config.settings()``: this runs
    at DAG parse time, and reading the settings is a read of one local YAML file (cached per process),
    not a database or network call.
    """
    if spark_settings is None or aws_conn_id is None or region_name is None:
        config = settings()
        spark_settings = spark_settings or config.spark
        aws_conn_id = aws_conn_id or config.aws.conn_id
        region_name = region_name or config.aws.region
    aws_kwargs: dict[str, Any] = {
        "aws_conn_id": aws_conn_id,
        "region_name": region_name,
        "botocore_config": RETRY_CONFIG,
    }
    job_task = {"inlets": list(inlets)}
    with TaskGroup(group_id=job.name, tooltip=f"Spark job {job.entry} on {spark_settings.backend}") as group:
        if spark_settings.backend == "local":
            LocalSparkSubmitOperator(
                task_id="spark_submit",
                application=spark.local_application(job),
                application_args=list(job.args),
                conf=dict(job.conf),
                master=spark_settings.local.master,
                spark_submit=spark_settings.local.spark_submit,
                aws_conn_id=aws_conn_id,
                region_name=region_name,
                pool=SPARK_JOBS,
                **job_task,
            )
        elif spark_settings.backend == "emr":
            _emr_tasks(job, spark_settings, aws_kwargs, job_task)
        elif spark_settings.backend == "emr_serverless":
            _emr_serverless_tasks(job, spark_settings, aws_kwargs, job_task)
        else:  # pragma: no cover - SparkSettings validates the backend
            raise ValueError(f"unknown spark backend {spark_settings.backend!r}")
    return group


def _emr_tasks(
    job: spark.SparkJob, spark_settings: SparkSettings, aws_kwargs: dict[str, Any], job_task: dict[str, Any]
) -> None:
    emr = spark_settings.emr
    wait = {
        "deferrable": True,
        "waiter_delay": emr.poll_seconds,
        "waiter_max_attempts": spark.wait_attempts(emr.step_timeout_minutes, emr.poll_seconds),
    }
    step = spark.emr_step(job, spark_settings)
    if emr.cluster_id:
        run_step = EmrAddStepsOperator(
            task_id="run_step",
            job_flow_id=emr.cluster_id,
            steps=[step],
            pool=SPARK_JOBS,
            **job_task,
            **wait,
            **aws_kwargs,
        )
        # On a long-lived cluster the job costs the cluster's instances while its step ran.
        record_cost = SparkJobCostOperator(
            task_id="record_cost",
            backend="emr",
            region_name=aws_kwargs["region_name"],
            job_name=job.name,
            job_task_id=run_step.task_id,
            cluster_id=emr.cluster_id,
        )
        run_step >> record_cost.as_teardown()
        return
    # job_flow_overrides is templated: the cluster's name carries the DAG and run it belongs to.
    run = EmrTransientClusterOperator(
        task_id="run_on_cluster",
        job_flow_overrides=spark.transient_cluster_config(
            emr.cluster_template,
            spark_settings,
            name=f"{job.name} ({{{{ dag.dag_id }}}} {{{{ run_id }}}})",
            step=step,
            tags={"dataplatform:spark-job": job.name},
        ),
        # The slot is held from RunJobFlow to the cluster's termination: the pool caps clusters alive.
        pool=EMR_TRANSIENT_CLUSTERS,
        **job_task,
        **wait,
        **aws_kwargs,
    )
    terminate = EmrTerminateClusterOperator(task_id="terminate_cluster", job_flow_id=run.output, **aws_kwargs)
    record_cost = SparkJobCostOperator(
        task_id="record_cost",
        backend="emr",
        region_name=aws_kwargs["region_name"],
        job_name=job.name,
        cluster_id=run.output,
    )
    # Teardowns without a setup: a setup's group has no leaf, and `group >> load` must wait for the job.
    run >> terminate.as_teardown()
    # After the termination: the cluster's end time is known then.
    terminate >> record_cost.as_teardown()


def _emr_serverless_tasks(
    job: spark.SparkJob, spark_settings: SparkSettings, aws_kwargs: dict[str, Any], job_task: dict[str, Any]
) -> None:
    serverless = spark_settings.emr_serverless
    start = EmrServerlessStartJobOperator(
        task_id="start_job_run",
        application_id=serverless.application_id,
        execution_role_arn=serverless.execution_role_arn,
        job_driver=spark.emr_serverless_job_driver(job, spark_settings),
        configuration_overrides=spark.emr_serverless_configuration_overrides(spark_settings),
        name=job.name,
        wait_for_completion=True,
        deferrable=True,
        cancel_on_kill=True,
        pool=SPARK_JOBS,
        **job_task,
        waiter_delay=serverless.poll_seconds,
        waiter_max_attempts=spark.wait_attempts(serverless.job_timeout_minutes, serverless.poll_seconds),
        **aws_kwargs,
    )
    record_cost = SparkJobCostOperator(
        task_id="record_cost",
        backend="emr_serverless",
        region_name=aws_kwargs["region_name"],
        job_name=job.name,
        job_task_id=start.task_id,
        application_id=serverless.application_id,
        sizing=job.sizing,
    )
    start >> record_cost.as_teardown()

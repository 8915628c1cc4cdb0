"""Airflow tasks for a ``SparkJob`` (``dataplatform.spark``) on the configured backend.

``spark_job_tasks(job)`` returns a TaskGroup named after the job, so a DAG reads
``extract >> spark_job_tasks(job) >> load``:

- ``local``: one ``spark_submit`` task (``LocalSparkSubmitOperator``), the job's output streamed into the
  task log.
- ``emr`` with ``spark.emr.cluster_id``: one ``run_step`` task that adds the step and waits for it,
  deferred.
- ``emr`` without a cluster id: ``create_cluster >> run_step >> terminate_cluster``; the last is a teardown
  of ``create_cluster``, so the cluster goes also when the step fails or times out.
- ``emr_serverless``: one ``start_job_run`` task, deferred, that cancels the job run when killed.

The task that runs the job from its start to its end (``spark_submit``, ``start_job_run``, ``run_step`` on
the configured cluster) takes a slot of the ``spark_jobs`` pool; a transient cluster's tasks take none
(``dataplatform.pools`` says why).

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
from typing import Any

from airflow.providers.amazon.aws.operators.emr import (
    EmrAddStepsOperator,
    EmrCreateJobFlowOperator,
    EmrServerlessStartJobOperator,
    EmrTerminateJobFlowOperator,
)
from airflow.sdk import Asset, BaseOperator, TaskGroup
from airflow.sdk.exceptions import AirflowException

from dataplatform import spark
from dataplatform.aws import RETRY_CONFIG
from dataplatform.config import SparkSettings, settings
from dataplatform.operators import assets
from dataplatform.operators.links import EmrJobLink
from dataplatform.pools import SPARK_JOBS


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
    steps = [spark.emr_step(job, spark_settings)]
    if emr.cluster_id:
        run_step = EmrAddStepsOperator(
            task_id="run_step",
            job_flow_id=emr.cluster_id,
            steps=steps,
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
    create = EmrCreateJobFlowOperator(
        task_id="create_cluster",
        job_flow_overrides=spark.transient_cluster_config(
            emr.cluster_template,
            spark_settings,
            name=f"{job.name} ({{{{ dag.dag_id }}}} {{{{ run_id }}}})",
            tags={"dataplatform:spark-job": job.name},
        ),
        # The template is the whole RunJobFlow request: no EMR connection merges hidden defaults into it.
        emr_conn_id=None,
        # Steps are accepted while the cluster starts; the step wait below covers provisioning too.
        wait_for_completion=False,
        **aws_kwargs,
    )
    # No pool here: a slot taken by the step would let its cluster idle, billed, while it waits.
    run_step = EmrAddStepsOperator(
        task_id="run_step", job_flow_id=create.output, steps=steps, **job_task, **wait, **aws_kwargs
    )
    terminate = EmrTerminateJobFlowOperator(
        task_id="terminate_cluster", job_flow_id=create.output, **aws_kwargs
    )
    record_cost = SparkJobCostOperator(
        task_id="record_cost",
        backend="emr",
        region_name=aws_kwargs["region_name"],
        job_name=job.name,
        cluster_id=create.output,
    )
    create >> run_step >> terminate.as_teardown(setups=create)
    # After the termination: the cluster's end time is known then.
    terminate >> record_cost.as_teardown(setups=create)


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

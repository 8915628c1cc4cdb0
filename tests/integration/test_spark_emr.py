"""The EMR and EMR Serverless backends against the moto server, run with dag.test().

moto proves wiring, never results: EMR steps stay RUNNING forever (so a step wait can only time out) and
EMR Serverless job runs report SUCCESS at once. A transient cluster's step is ended here as EMR would end
it (``EmrStepEnder``, the endpoint's ``emr/end-step``: the cluster then terminates, with errors after a
failed step). The assertions are on the requests the tasks made (the recorded JSON bodies) and on the
state left in moto.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dataplatform.config import EmrServerlessSettings, EmrSettings, SparkSettings
from dataplatform.spark import SparkJob, SparkSizing
from tests.airflow_helpers import extra_links, serialize_to_db
from tests.moto_helpers import EmrStepEnder

pytestmark = pytest.mark.integration

LOGICAL_DATE = datetime(2024, 1, 2, tzinfo=UTC)
CODE_URI = "s3://ops-code/releases/42/"
ROLE_ARN = "arn:aws:iam::123456789012:role/emr-serverless-job"

JOB = SparkJob(
    name="partition_profile",
    entry="spark_jobs.partition_profile",
    args=[
        "--input",
        "s3://lake/raw/web_events/",
        "--output",
        "s3://lake/profiles/ds={{ ds }}/",
        "--partition-columns",
        "dt,hour",
    ],
    conf={"spark.sql.shuffle.partitions": "64"},
    sizing=SparkSizing(
        driver_cores=1, driver_memory="2g", executor_cores=4, executor_memory="8g", executor_instances=2
    ),
)
# What the tasks must send once Jinja is rendered for LOGICAL_DATE.
RENDERED_ARGS = [
    "--input",
    "s3://lake/raw/web_events/",
    "--output",
    "s3://lake/profiles/ds=2024-01-02/",
    "--partition-columns",
    "dt,hour",
]
SIZING_CONF = [
    "spark.driver.cores=1",
    "spark.driver.memory=2g",
    "spark.executor.cores=4",
    "spark.executor.memory=8g",
    "spark.executor.instances=2",
    "spark.sql.shuffle.partitions=64",
]
EXPECTED_STEP = {
    "Name": "partition_profile",
    "ActionOnFailure": "CONTINUE",
    "HadoopJarStep": {
        "Jar": "command-runner.jar",
        "Args": [
            "spark-submit",
            "--deploy-mode",
            "cluster",
            *[part for pair in SIZING_CONF for part in ("--conf", pair)],
            "--py-files",
            "s3://ops-code/releases/42/spark_jobs.zip",
            "s3://ops-code/releases/42/spark_jobs/partition_profile.py",
            *RENDERED_ARGS,
        ],
    },
}
# One poll, no sleep: moto's steps never finish, so the wait fails at its first look.
FAST_EMR = {"step_timeout_minutes": 1, "poll_seconds": 60}
# A transient cluster whose step EmrStepEnder ends: the wait polls every second until the cluster ended.
TRANSIENT_EMR = {"step_timeout_minutes": 1, "poll_seconds": 1}


def build_dag(dag_id: str, spark_settings: SparkSettings):
    from airflow.sdk import DAG

    from dataplatform.operators.spark import spark_job_tasks

    with DAG(dag_id=dag_id, schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC), catchup=False) as dag:
        group = spark_job_tasks(JOB, spark_settings, aws_conn_id="aws_default", region_name="us-east-1")
    assert group.group_id == "partition_profile"
    serialize_to_db(dag)
    return dag


def cost_records(aws) -> list[dict]:
    """The items of the Spark job cost table, as plain values."""
    from dataplatform.config import settings
    from dataplatform.dynamodb import from_item

    table = settings().pricing.job_costs_table
    return [from_item(item) for item in aws.client("dynamodb").scan(TableName=table)["Items"]]


def states(dagrun) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dagrun.get_task_instances()}


def test_transient_cluster_group_wires_into_a_dag_with_a_teardown():
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG, TriggerRule

    from dataplatform.operators.spark import spark_job_tasks

    settings = SparkSettings(backend="emr", code_uri=CODE_URI, emr=EmrSettings(**FAST_EMR))
    with DAG(dag_id="wiring", schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC)) as dag:
        extract, load = EmptyOperator(task_id="extract"), EmptyOperator(task_id="load")
        extract >> spark_job_tasks(JOB, settings, aws_conn_id="aws_default", region_name="us-east-1") >> load

    upstream = {task.task_id: sorted(task.upstream_task_ids) for task in dag.tasks}
    assert upstream == {
        "extract": [],
        "partition_profile.run_on_cluster": ["extract"],
        "partition_profile.terminate_cluster": ["partition_profile.run_on_cluster"],
        # After the termination, when the cluster's end time is known.
        "partition_profile.record_cost": [
            "partition_profile.run_on_cluster",
            "partition_profile.terminate_cluster",
        ],
        # Downstream work waits for the job's cluster, not for the teardowns.
        "load": ["partition_profile.run_on_cluster"],
    }
    run = dag.task_dict["partition_profile.run_on_cluster"]
    terminate = dag.task_dict["partition_profile.terminate_cluster"]
    # Not a setup: a group whose only work task is a setup has no leaf, and `>> load` would skip it.
    assert not run.is_setup and terminate.is_teardown
    assert dag.task_dict["partition_profile.record_cost"].is_teardown
    # Runs whatever happened to the job's task: also when it failed, was killed or timed out.
    assert terminate.trigger_rule == TriggerRule.ALL_DONE_SETUP_SUCCESS
    assert run.emr_conn_id is None
    assert (run.pool, run.deferrable, run.waiter_delay, run.waiter_max_attempts) == (
        "emr_transient_clusters",
        True,
        60,
        1,
    )
    for task in (run, terminate):
        assert (task.aws_conn_id, task.region_name) == ("aws_default", "us-east-1")
        assert task.botocore_config == {
            "retries": {"mode": "adaptive", "max_attempts": 10},
            "max_pool_connections": 64,
        }


# -- EMR: a configured cluster ---------------------------------------------------------------------------


def test_emr_existing_cluster_gets_the_step(aws, airflow_db):
    emr = aws.client("emr")
    cluster_id = emr.run_job_flow(
        Name="long-running",
        ReleaseLabel="emr-7.5.0",
        Applications=[{"Name": "Spark"}],
        Instances={
            "MasterInstanceType": "m5.xlarge",
            "InstanceCount": 1,
            "KeepJobFlowAliveWhenNoSteps": True,
        },
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
    )["JobFlowId"]
    settings = SparkSettings(
        backend="emr", code_uri=CODE_URI, emr=EmrSettings(cluster_id=cluster_id, **FAST_EMR)
    )
    dag = build_dag("test_spark_emr_existing", settings)
    assert sorted(dag.task_dict) == ["partition_profile.record_cost", "partition_profile.run_step"]
    run_step = dag.task_dict["partition_profile.run_step"]
    assert (run_step.deferrable, run_step.waiter_delay, run_step.waiter_max_attempts) == (True, 60, 1)
    aws.server.start_recording()

    dagrun = dag.test(logical_date=LOGICAL_DATE)

    add_steps = aws.server.recorded_requests("ElasticMapReduce.AddJobFlowSteps")
    assert [request["body"] for request in add_steps] == [{"JobFlowId": cluster_id, "Steps": [EXPECTED_STEP]}]
    # The deferred wait polled the step it added, once (moto keeps it RUNNING, so that poll fails the wait).
    polls = [
        request["body"]
        for request in aws.server.recorded_requests("ElasticMapReduce.ListSteps")
        if "StepIds" in request["body"]
    ]
    (step,) = emr.list_steps(ClusterId=cluster_id)["Steps"]
    assert step["Config"]["Args"] == EXPECTED_STEP["HadoopJarStep"]["Args"]
    assert step["Status"]["State"] == "RUNNING"
    assert polls == [{"ClusterId": cluster_id, "StepIds": [step["Id"]]}]
    # The cost teardown runs although the step failed, and does not turn the run green.
    assert states(dagrun) == {
        "partition_profile.run_step": "failed",
        "partition_profile.record_cost": "success",
    }
    assert dagrun.state == "failed"
    # The step failed, so its task returned no step id: the cost task found the step by name. moto lists
    # no instances, so the group's 1 x m5.xlarge is priced over the step's run, billed the 60 s minimum:
    # EC2 0.192 / 60 and EMR 0.048 / 60.
    (record,) = cost_records(aws)
    assert (record["job_name"], record["backend"], record["resource_id"]) == (
        "partition_profile",
        "emr",
        cluster_id,
    )
    assert (record["instances"], record["instance_hours"], record["estimated"]) == (1, "0.0167", True)
    assert (record["ec2_cost"], record["emr_cost"], record["total_cost"]) == ("0.0032", "0.0008", "0.0040")
    # A configured cluster is never terminated by a job.
    assert not aws.server.recorded_requests("ElasticMapReduce.TerminateJobFlows")
    assert emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"] not in (
        "TERMINATING",
        "TERMINATED",
        "TERMINATED_WITH_ERRORS",
    )


# -- EMR: a transient cluster ----------------------------------------------------------------------------


def transient_run(aws, dag_id: str, step_state: str, reason: str | None = None):
    """One dag.test() run of the job on a transient cluster whose step EMR ends in ``step_state``."""
    settings = SparkSettings(
        backend="emr",
        code_uri=CODE_URI,
        emr=EmrSettings(release_label="emr-7.2.0", log_uri="s3://ops-logs/emr/", **TRANSIENT_EMR),
    )
    dag = build_dag(dag_id, settings)
    assert sorted(dag.task_dict) == [
        "partition_profile.record_cost",
        "partition_profile.run_on_cluster",
        "partition_profile.terminate_cluster",
    ]
    aws.server.start_recording()
    emr = aws.client("emr")
    with EmrStepEnder(aws.server, emr, step_state, reason) as ender:
        dagrun = dag.test(logical_date=LOGICAL_DATE)
    (cluster,) = emr.list_clusters()["Clusters"]
    assert list(ender.ended) == [cluster["Id"]]
    return dagrun, cluster["Id"]


def test_emr_transient_cluster_runs_its_step_from_the_request_and_ends_with_it(aws, airflow_db):
    dagrun, cluster_id = transient_run(aws, "test_spark_emr_transient_ok", "COMPLETED")

    (run_job_flow,) = [
        request["body"] for request in aws.server.recorded_requests("ElasticMapReduce.RunJobFlow")
    ]
    assert run_job_flow["Name"] == f"partition_profile (test_spark_emr_transient_ok {dagrun.run_id})"
    assert run_job_flow["ReleaseLabel"] == "emr-7.2.0"
    assert run_job_flow["LogUri"] == "s3://ops-logs/emr/"
    assert run_job_flow["Applications"] == [{"Name": "Spark"}]
    # The step travels in the request, and the cluster does not outlive it.
    assert run_job_flow["Steps"] == [{**EXPECTED_STEP, "ActionOnFailure": "TERMINATE_CLUSTER"}]
    assert run_job_flow["Instances"]["KeepJobFlowAliveWhenNoSteps"] is False
    assert not aws.server.recorded_requests("ElasticMapReduce.AddJobFlowSteps")
    fleets = {fleet["InstanceFleetType"]: fleet for fleet in run_job_flow["Instances"]["InstanceFleets"]}
    assert sorted(fleets) == ["CORE", "MASTER", "TASK"]
    assert fleets["MASTER"]["TargetOnDemandCapacity"] == 1
    assert fleets["CORE"]["TargetOnDemandCapacity"] == 2
    assert "TargetSpotCapacity" not in fleets["MASTER"] and "TargetSpotCapacity" not in fleets["CORE"]
    task_fleet = fleets["TASK"]
    assert task_fleet["TargetSpotCapacity"] == 8 and "TargetOnDemandCapacity" not in task_fleet
    assert [item["InstanceType"] for item in task_fleet["InstanceTypeConfigs"]] == [
        "m6i.2xlarge",
        "m5.2xlarge",
        "m5a.2xlarge",
        "r5.2xlarge",
        "m6i.4xlarge",
    ]
    assert task_fleet["LaunchSpecifications"]["SpotSpecification"] == {
        "AllocationStrategy": "price-capacity-optimized",
        "TimeoutDurationMinutes": 10,
        "TimeoutAction": "SWITCH_TO_ON_DEMAND",
    }
    assert {"Key": "dataplatform:spark-job", "Value": "partition_profile"} in run_job_flow["Tags"]

    # The task ended when the cluster had: it read the step's outcome, then the teardowns ran.
    emr = aws.client("emr")
    (step,) = emr.list_steps(ClusterId=cluster_id)["Steps"]
    assert step["Status"]["State"] == "COMPLETED"
    assert emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"] == "TERMINATED"
    assert states(dagrun) == {
        "partition_profile.run_on_cluster": "success",
        "partition_profile.terminate_cluster": "success",
        "partition_profile.record_cost": "success",
    }
    assert dagrun.state == "success"
    ti = dagrun.get_task_instance("partition_profile.run_on_cluster")
    assert ti.xcom_pull(task_ids="partition_profile.run_on_cluster") == cluster_id
    # The teardown (there for a failed, killed or timed-out task) leaves a cluster that has ended alone.
    assert not aws.server.recorded_requests("ElasticMapReduce.TerminateJobFlows")
    # moto's EMR lists neither instances nor fleets: a record that says why, and no cost (never zero).
    (record,) = cost_records(aws)
    assert record["run_key"] == f"test_spark_emr_transient_ok/{dagrun.run_id}"
    assert (
        record["pricing_error"] == f"EMR cluster {cluster_id} reports no instances and no capacity to price"
    )
    assert "total_cost" not in record
    # The cost task links to the cluster it ran on (the run_on_cluster XCom), even without a price.
    assert extra_links(dagrun, "partition_profile.record_cost") == {
        "EMR job": f"https://us-east-1.console.aws.amazon.com/emr/home?region=us-east-1#/clusterDetails/{cluster_id}"
    }


def test_emr_transient_cluster_whose_step_fails_fails_the_task_and_is_torn_down(aws, airflow_db, capfd):
    """The step fails: EMR ends the cluster with errors; the task fails naming the step (read with
    ListSteps, not inferred from the cluster), the teardown still runs, and the cost record is written."""
    dagrun, cluster_id = transient_run(aws, "test_spark_emr_transient_failed", "FAILED", "exit code 1")

    emr = aws.client("emr")
    assert (
        emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"] == "TERMINATED_WITH_ERRORS"
    )
    (step,) = emr.list_steps(ClusterId=cluster_id)["Steps"]
    assert step["Status"]["State"] == "FAILED"
    # The task's error, in its log (dag.test prints it).
    out, err = capfd.readouterr()
    assert (
        f"step 'partition_profile' ({step['Id']}) on EMR cluster {cluster_id} is FAILED: exit code 1"
        in out + err
    )
    assert states(dagrun) == {
        "partition_profile.run_on_cluster": "failed",
        "partition_profile.terminate_cluster": "success",
        "partition_profile.record_cost": "success",
    }
    assert dagrun.state == "failed"
    # The failed task pushed the cluster id before it deferred: the teardowns found the cluster (ended
    # by EMR already: nothing to terminate) and priced it.
    assert not aws.server.recorded_requests("ElasticMapReduce.TerminateJobFlows")
    (record,) = cost_records(aws)
    assert record["run_key"] == f"test_spark_emr_transient_failed/{dagrun.run_id}"
    assert (
        record["pricing_error"] == f"EMR cluster {cluster_id} reports no instances and no capacity to price"
    )


# -- EMR Serverless --------------------------------------------------------------------------------------


def test_emr_serverless_job_run_has_the_job_driver(aws, airflow_db):
    serverless = aws.client("emr-serverless")
    application_id = serverless.create_application(name="spark-jobs", releaseLabel="emr-7.5.0", type="SPARK")[
        "applicationId"
    ]
    settings = SparkSettings(
        backend="emr_serverless",
        code_uri=CODE_URI,
        emr_serverless=EmrServerlessSettings(
            application_id=application_id,
            execution_role_arn=ROLE_ARN,
            log_uri="s3://ops-logs/serverless/",
            job_timeout_minutes=1,
            poll_seconds=60,
        ),
    )
    dag = build_dag("test_spark_emr_serverless", settings)
    start = dag.task_dict["partition_profile.start_job_run"]
    assert sorted(dag.task_dict) == ["partition_profile.record_cost", "partition_profile.start_job_run"]
    assert (start.deferrable, start.cancel_on_kill, start.wait_for_completion) == (True, True, True)

    dagrun = dag.test(logical_date=LOGICAL_DATE)

    assert states(dagrun) == {
        "partition_profile.start_job_run": "success",
        "partition_profile.record_cost": "success",
    }
    assert dagrun.state == "success"
    (listed,) = serverless.list_job_runs(applicationId=application_id)["jobRuns"]
    job_run = serverless.get_job_run(applicationId=application_id, jobRunId=listed["id"])["jobRun"]
    assert job_run["name"] == "partition_profile"
    assert job_run["executionRole"] == ROLE_ARN  # GetJobRun names the field executionRole
    assert job_run["state"] == "SUCCESS"
    assert job_run["jobDriver"] == {
        "sparkSubmit": {
            "entryPoint": "s3://ops-code/releases/42/spark_jobs/partition_profile.py",
            "entryPointArguments": RENDERED_ARGS,
            "sparkSubmitParameters": " ".join(
                [
                    *[part for pair in SIZING_CONF for part in ("--conf", pair)],
                    "--py-files",
                    "s3://ops-code/releases/42/spark_jobs.zip",
                ]
            ),
        }
    }
    # moto reports no billed utilization (and equal created / updated times): the sizing is priced, each
    # worker the 1-minute minimum. 1 + 2 x 4 = 9 vCPU, 2 + 2 x 8 = 18 GB for 1/60 h at the x86 rates:
    # 0.15 x 0.052624 = 0.0078936, 0.3 x 0.0057785 = 0.0017336.
    (record,) = cost_records(aws)
    assert record["resource_id"] == f"{application_id}/{listed['id']}"
    assert (record["architecture"], record["estimated"]) == ("x86_64", True)
    assert extra_links(dagrun, "partition_profile.record_cost") == {
        "EMR job": "https://us-east-1.console.aws.amazon.com/emr/home?region=us-east-1"
        f"#/serverless-applications/{application_id}/job-runs/{listed['id']}"
    }
    assert (record["vcpu_hours"], record["memory_gb_hours"]) == ("0.1500", "0.3000")
    assert (record["vcpu_cost"], record["memory_cost"], record["total_cost"]) == (
        "0.0079",
        "0.0017",
        "0.0096",
    )
    assert job_run["configurationOverrides"] == {
        "monitoringConfiguration": {"s3MonitoringConfiguration": {"logUri": "s3://ops-logs/serverless/"}}
    }

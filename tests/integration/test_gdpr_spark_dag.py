"""The Spark side of gdpr_erasure against moto, run with ``dag.test()`` on a config with the EMR backend
that adds a Hudi dataset: the AWS path, where Hudi deletes run on a transient cluster. moto proves wiring, never results: its EMR
steps stay RUNNING and its clusters never end, so the wait for the cluster's end times out, and what is
checked is the lifecycle around it: the transient cluster is created from the template with the delete
step (and the job spec) in its request, and is torn down although the task that held it failed; the
requests stay retriable with the reason; no subject id leaks into the cluster request or the step."""

from __future__ import annotations

import json

import pytest
import yaml

from dataplatform.config import CONFIG_DIR, settings
from dataplatform.gdpr import audit, requests
from dataplatform.s3.objects import split_uri
from tests.airflow_helpers import run_repo_dag, task_states

pytestmark = pytest.mark.integration

SUBJECTS = ["cust-000004", "cust-000017"]
HUDI_DATASET = {
    "format": "hudi",
    "database": "lake",
    "table": "app_logs",
    "location": "s3://hudi-lake/app_logs/",
    "subject_columns": ["user_id"],
    "partition_column": "log_date",
    "record_key": "log_id",
    "precombine_field": "event_ts",
    "hudi_table_type": "MERGE_ON_READ",
    "engine": "spark",
}


@pytest.fixture
def hudi_config(aws, airflow_db, tmp_path, monkeypatch):
    raw = yaml.safe_load((CONFIG_DIR / "local.yaml").read_text())
    raw["spark"] = {
        # The AWS path: Hudi on a transient EMR cluster (on the local backend it runs locally, see
        # tests/integration/test_gdpr_hudi_dag.py).
        "backend": "emr",
        "code_uri": "s3://ops-code/releases/7/",
        # One poll, no sleep: moto's clusters never end, so the wait fails at its first look.
        "emr": {"step_timeout_minutes": 1, "poll_seconds": 60, "log_uri": "s3://ops-logs/emr/"},
    }
    raw["gdpr"]["datasets"]["app_logs"] = HUDI_DATASET
    path = tmp_path / "hudi.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("DATAPLATFORM_CONFIG", str(path))
    settings.cache_clear()
    aws.s3.create_bucket(Bucket=split_uri(settings().reports_uri)[0])
    yield aws
    settings.cache_clear()


def test_a_hudi_dataset_runs_on_a_transient_cluster_that_is_torn_down_when_the_step_fails(hudi_config):
    aws = hudi_config
    aws.server.start_recording()

    run = run_repo_dag("gdpr_erasure", run_conf={"subject_ids": SUBJECTS, "datasets": ["app_logs"]})

    group = "erase_app_logs."
    states = task_states(run)
    assert states[group + "plan[-1]"] == "success"
    # The cluster outlived the wait (its step still RUNNING): the task fails, the teardown ends it.
    assert states[group + "gdpr_app_logs.run_on_cluster[-1]"] == "failed"
    assert states[group + "gdpr_app_logs.terminate_cluster[-1]"] == "success"
    assert states[group + "gdpr_app_logs.record_cost[-1]"] == "success"
    assert states[group + "record[-1]"] == "success"
    assert states["erase_iceberg[-1]"] == "skipped"
    assert states["finish_requests[-1]"] == "failed" and run.state == "failed"

    emr = aws.client("emr")
    (cluster,) = emr.list_clusters()["Clusters"]
    assert emr.describe_cluster(ClusterId=cluster["Id"])["Cluster"]["Status"]["State"] == "TERMINATED"
    terminations = aws.server.recorded_requests("ElasticMapReduce.TerminateJobFlows")
    assert [request["body"] for request in terminations] == [{"JobFlowIds": [cluster["Id"]]}]
    (run_job_flow,) = [r["body"] for r in aws.server.recorded_requests("ElasticMapReduce.RunJobFlow")]
    fleets = {f["InstanceFleetType"]: f for f in run_job_flow["Instances"]["InstanceFleets"]}
    assert "TargetSpotCapacity" in fleets["TASK"]
    # The step is in the request and the cluster ends with it: no step is added afterwards.
    assert run_job_flow["Instances"]["KeepJobFlowAliveWhenNoSteps"] is False
    (step,) = run_job_flow["Steps"]
    assert step["ActionOnFailure"] == "TERMINATE_CLUSTER"
    assert not aws.server.recorded_requests("ElasticMapReduce.AddJobFlowSteps")
    args = step["HadoopJarStep"]["Args"]
    spec_uri = args[args.index("--spec") + 1]
    assert spec_uri.startswith(settings().gdpr.work_uri + "app_logs/") and spec_uri.endswith("/spec.json")
    assert "spark.jars=/usr/lib/hudi/hudi-spark-bundle.jar" in args
    assert args[-3].endswith("spark_jobs/gdpr_hudi_delete.py")
    sent = json.dumps(aws.server.recorded_requests("ElasticMapReduce"))
    assert not any(subject in sent for subject in SUBJECTS)

    # The spec held the subject ids: gone once recorded.
    bucket, key = split_uri(spec_uri)
    assert aws.s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0) == 0
    config = settings().gdpr
    dynamodb = aws.client("dynamodb")
    failed = requests.requests_by_status(dynamodb, config.requests_table, requests.FAILED)
    assert sorted(r.subject_id for r in failed) == SUBJECTS
    assert all("app_logs: the Spark job wrote no result" in r.reason for r in failed)
    for request in failed:
        (record,) = audit.records_for(dynamodb, config.audit_table, request.request_id)
        assert record["dataset"] == "app_logs" and record["outcome"] == "failed"


def test_the_transient_cluster_gets_a_cost_record_even_when_it_cannot_be_priced(hudi_config):
    """moto's EMR lists no instances, fleets or groups for a cluster (ListInstanceFleets is not
    implemented), so there is nothing to price: the record names the cluster and the reason and has no
    cost (never zero). The pricing from ListInstances and from fleets is tested on real-shaped responses
    in tests/unit/test_pricing_jobs.py."""
    aws = hudi_config
    run = run_repo_dag("gdpr_erasure", run_conf={"subject_ids": SUBJECTS, "datasets": ["app_logs"]})
    assert task_states(run)["erase_app_logs.gdpr_app_logs.record_cost[-1]"] == "success"

    (summary,) = aws.client("emr").list_clusters()["Clusters"]
    dynamodb = aws.client("dynamodb")
    items = dynamodb.scan(TableName=settings().pricing.job_costs_table)["Items"]
    (record,) = [{k: v.get("S", v.get("N", v.get("BOOL"))) for k, v in item.items()} for item in items]
    assert record["run_key"] == f"gdpr_erasure/{run.run_id}"
    assert record["job_name"] == "erase_app_logs.gdpr_app_logs"
    assert record["backend"] == "emr"
    assert (
        record["pricing_error"]
        == f"EMR cluster {summary['Id']} reports no instances and no capacity to price"
    )
    assert "total_cost" not in record

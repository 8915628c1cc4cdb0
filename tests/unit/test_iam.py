"""The IAM documents (include/iam/) and the check that holds recorded AWS requests to them.

Cheap: synthetic request-log lines, no server. The real check runs on the demo's requests in
``make chaos`` (its fault-free run) and by hand (``DATAPLATFORM_REQUEST_LOG=... make demo``, then
``python -m dataplatform.devstack.iam_check <log>``).
"""

import json

import pytest

from dataplatform.config import REPO_ROOT
from dataplatform.devstack import iam
from dataplatform.devstack.iam_check import Need, check, main, needs_of

pytestmark = pytest.mark.unit

BOTO = "Boto3/1.43.56 md/Botocore#1.43.56 Airflow/3.3.1"
JAVA = "Hadoop 3.3.4, aws-sdk-java/1.12.262 Linux/6.1"
JOB_BOTO = "Boto3/1.43.56 md/Botocore#1.43.56 app/dataplatform-spark-job"
LAKE = "dataplatform-local-lake"


def line(operation, path="", query=(), service="s3", phase="recon_stateless", agent=BOTO, method="GET"):
    return {
        "t": 0.0, "phase": phase, "service": service, "operation": operation, "method": method,
        "path": path, "query": list(query), "status": 200, "fault": None, "user_agent": agent,
    }  # fmt: skip


# -- mapping requests to actions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "query", "actions", "resource"),
    [
        ("ListObjectsV2", ["list-type", "prefix"], ("s3:ListBucket",), f"arn:aws:s3:::{LAKE}"),
        ("HeadBucket", [], ("s3:ListBucket",), f"arn:aws:s3:::{LAKE}"),
        ("ListObjectVersions", ["versions"], ("s3:ListBucketVersions",), f"arn:aws:s3:::{LAKE}"),
        ("HeadObject", [], ("s3:GetObject",), f"arn:aws:s3:::{LAKE}/a/b.json"),
        ("GetObject", [], ("s3:GetObject",), f"arn:aws:s3:::{LAKE}/a/b.json"),
        ("GetObject", ["versionId"], ("s3:GetObjectVersion",), f"arn:aws:s3:::{LAKE}/a/b.json"),
        ("HeadObject", ["versionId"], ("s3:GetObjectVersion",), f"arn:aws:s3:::{LAKE}/a/b.json"),
        ("DeleteObject", ["versionId"], ("s3:DeleteObjectVersion",), f"arn:aws:s3:::{LAKE}/a/b.json"),
        ("CreateMultipartUpload", ["uploads"], ("s3:PutObject",), f"arn:aws:s3:::{LAKE}/a/b.json"),
        ("UploadPart", ["partNumber", "uploadId"], ("s3:PutObject",), f"arn:aws:s3:::{LAKE}/a/b.json"),
        ("CompleteMultipartUpload", ["uploadId"], ("s3:PutObject",), f"arn:aws:s3:::{LAKE}/a/b.json"),
        ("GetObjectTagging", ["tagging"], ("s3:GetObjectTagging",), f"arn:aws:s3:::{LAKE}/a/b.json"),
        ("GetObjectTagging", ["tagging", "versionId"], ("s3:GetObjectVersionTagging",), f"arn:aws:s3:::{LAKE}/a/b.json"),
        ("PutObjectTagging", ["tagging"], ("s3:PutObjectTagging",), f"arn:aws:s3:::{LAKE}/a/b.json"),
        ("PutBucketLifecycleConfiguration", ["lifecycle"], ("s3:PutLifecycleConfiguration",), f"arn:aws:s3:::{LAKE}"),
        ("PutBucketLifecycle", ["lifecycle"], ("s3:PutLifecycleConfiguration",), f"arn:aws:s3:::{LAKE}"),
        ("GetBucketLifecycle", ["lifecycle"], ("s3:GetLifecycleConfiguration",), f"arn:aws:s3:::{LAKE}"),
        ("GetBucketVersioning", ["versioning"], ("s3:GetBucketVersioning",), f"arn:aws:s3:::{LAKE}"),
    ],
)  # fmt: skip
def test_s3_operations_map_to_the_iam_action_and_resource_they_need(operation, query, actions, resource):
    path = f"/{LAKE}/a/b.json" if resource.count("/") else f"/{LAKE}"
    assert needs_of(line(operation, path, query)) == (Need(actions, resource),)


def test_delete_objects_needs_delete_object_or_its_version_on_the_bucket_s_objects():
    (need,) = needs_of(line("DeleteObjects", f"/{LAKE}", ["delete"], method="POST"))
    assert need.actions == ("s3:DeleteObject", "s3:DeleteObjectVersion")
    assert (need.resource, need.resource_is_prefix) == (f"arn:aws:s3:::{LAKE}/", True)


def test_copy_object_needs_put_on_the_target_and_get_on_the_source():
    needs = needs_of(line("CopyObject", f"/{LAKE}/to/key", method="PUT"))
    assert needs == (Need(("s3:PutObject",), f"arn:aws:s3:::{LAKE}/to/key"), Need(("s3:GetObject",)))


@pytest.mark.parametrize(
    ("service", "operation", "actions"),
    [
        ("glue", "GetPartitions", [("glue:GetPartitions",)]),
        ("glue", "BatchCreatePartition", [("glue:BatchCreatePartition",)]),
        ("dynamodb", "Query", [("dynamodb:Query",)]),
        ("dynamodb", "TransactWriteItems",
         [("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem")]),
        ("elasticmapreduce", "AddJobFlowSteps", [("elasticmapreduce:AddJobFlowSteps",)]),
        ("elasticmapreduce", "RunJobFlow", [("elasticmapreduce:RunJobFlow",), ("iam:PassRole",)]),
        ("emr-serverless", "StartJobRun", [("emr-serverless:StartJobRun",), ("iam:PassRole",)]),
        ("emr-serverless", "GetJobRun", [("emr-serverless:GetJobRun",)]),
    ],
)  # fmt: skip
def test_other_services_map_one_to_one_plus_passrole_where_a_launch_passes_a_role(
    service, operation, actions
):
    assert [need.actions for need in needs_of(line(operation, service=service))] == actions


def test_a_request_without_an_operation_name_is_an_error_not_a_silent_pass():
    with pytest.raises(ValueError, match="without an operation"):
        needs_of(line("", "/x"))


# -- the check ------------------------------------------------------------------------------------------


def write_log(tmp_path, lines):
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in lines))
    return path


def test_a_call_outside_the_pipeline_s_policy_is_a_missing_grant(tmp_path):
    # The Glue loader reads the landing area of reconciliation: not its data, not in its policy.
    log = write_log(tmp_path, [line("GetObject", f"/{LAKE}/recon/landing/batch-1/manifest.json",
                                    phase="glue_partition_loader")])  # fmt: skip
    result = check(log)
    assert result["missing_grants"] == [
        {
            "role": "mwaa-glue-partition-loader",
            "action": "s3:GetObject",
            "phase": "glue_partition_loader",
            "requests": 1,
            "resources": 1,
            "resource": f"arn:aws:s3:::{LAKE}/recon/landing/batch-1/manifest.json",
        }
    ]


def test_the_same_call_from_the_pipeline_that_owns_the_data_is_granted(tmp_path):
    log = write_log(tmp_path, [line("GetObject", f"/{LAKE}/recon/landing/batch-1/manifest.json")])
    result = check(log)
    assert result["missing_grants"] == []
    assert result["requests_checked"] == 1
    assert "mwaa-reconciliation: s3:GetObject" not in result["iam_unused_grants"]


def test_spark_job_calls_are_held_to_the_job_roles_not_the_worker_s(tmp_path):
    # Glue UpdateTable from Spark's Iceberg catalog (the JVM's SDK) and an index read from a job's boto3:
    # the job roles grant both; the same UpdateTable from the reconciliation worker is not granted.
    log = write_log(tmp_path, [line("UpdateTable", service="glue", agent=JAVA, phase="recon_stateful"),
                               line("BatchGetItem", service="dynamodb", agent=JOB_BOTO, phase="recon_stateful"),
                               line("UpdateTable", service="glue", phase="recon_stateful")])  # fmt: skip
    result = check(log)
    assert [(m["role"], m["action"]) for m in result["missing_grants"]] == [
        ("mwaa-reconciliation", "glue:UpdateTable")
    ]
    assert result["documents"]["emr-job-role"]["used"] == 2
    assert result["documents"]["emr-serverless-job-role"]["used"] == 2


def test_seeding_and_cli_calls_are_not_checked(tmp_path):
    log = write_log(tmp_path, [line("CreateBucket", f"/{LAKE}", phase="seed", method="PUT"),
                               line("Scan", service="dynamodb", phase="cli")])  # fmt: skip
    result = check(log)
    assert (result["requests_checked"], result["requests_unchecked"], result["missing_grants"]) == (0, 2, [])


def test_a_grant_nothing_called_and_no_aws_only_path_needs_is_reported_unused(tmp_path):
    log = write_log(tmp_path, [line("GetObject", f"/{LAKE}/recon/landing/batch-1/manifest.json")])
    unused = check(log)["iam_unused_grants"]
    # Called nowhere in this log, and reconciliation's DynamoDB actions are called locally: unused.
    assert "mwaa-reconciliation: dynamodb:Query" in unused
    # EMR launches only happen in AWS: listed in aws-only.json, so never reported.
    assert not [grant for grant in unused if grant.startswith("mwaa-spark-launch: elasticmapreduce:")]


def test_delete_objects_is_granted_by_a_grant_on_some_objects_of_its_bucket(tmp_path):
    # Iceberg maintenance deletes unreferenced files of its tables (in the demo's lake bucket).
    log = write_log(
        tmp_path, [line("DeleteObjects", f"/{LAKE}", ["delete"], phase="iceberg_maintenance", method="POST")]
    )
    assert check(log)["missing_grants"] == []
    foreign = write_log(
        tmp_path,
        [
            line(
                "DeleteObjects",
                "/someone-elses-bucket",
                ["delete"],
                phase="iceberg_maintenance",
                method="POST",
            )
        ],
    )
    assert len(check(foreign)["missing_grants"]) == 1


def test_cli_prints_the_check_as_json_and_fails_on_a_missing_grant(tmp_path, capsys):
    log = write_log(tmp_path, [line("DeleteTable", service="glue", phase="gdpr_erasure")])
    assert main([str(log)]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["missing_grants"][0]["action"] == "glue:DeleteTable"


def test_a_policies_dir_is_read_as_given(tmp_path):
    # include/iam/ names the AWS buckets: the demo's local request is not granted by them.
    log = write_log(tmp_path, [line("GetObject", f"/{LAKE}/recon/landing/batch-1/manifest.json")])
    assert check(log, iam.IAM_DIR)["missing_grants"][0]["resource"].startswith(f"arn:aws:s3:::{LAKE}/")
    ok = write_log(tmp_path, [line("GetObject", "/example-datalake-raw/recon/landing/batch-1/manifest.json")])
    assert check(ok, iam.IAM_DIR)["missing_grants"] == []


# -- the documents and the README --------------------------------------------------------------------------


def test_include_iam_is_the_documents_rendered_for_the_aws_config():
    assert iam.load() == iam.policies(iam.aws_settings())


def test_the_local_documents_grant_what_include_iam_grants_but_aws_only_statements():
    # The demo checks the local rendering; the deployed files grant the same actions, plus statements on
    # what the local config does not have (spark.code_uri, spark.emr.log_uri), whose actions are AWS-only
    # or granted again by another statement.
    def actions(documents):
        return {name: {a for s in doc["Statement"] for a in s["Action"]} for name, doc in documents.items()}

    local, deployed, justified = actions(iam.local_documents()), actions(iam.load()), iam.aws_only()
    assert local.keys() == deployed.keys() == {d.name for d in iam.DOCUMENTS}
    for name in deployed:
        assert local[name] <= deployed[name], name
        assert deployed[name] - local[name] <= set(justified.get(name, {})), name


# Actions IAM cannot scope to a resource ARN (the Service Authorization Reference lists no resource type
# for them), or that EMR's service role needs on instances it has not created yet: the only ones on "*".
UNSCOPABLE = {
    "cloudwatch:PutMetricData", "logs:DescribeLogGroups", "pricing:GetProducts", "ec2:DescribeSpotPriceHistory",
    "ec2:DescribeInstances", "ec2:DescribeVolumes", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups",
    "ec2:DescribeImages", "ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs", "batch:DescribeJobs",
    "batch:DescribeJobQueues", "batch:DescribeComputeEnvironments", "ecs:DescribeContainerInstances",
    "ecs:ListContainerInstances", "fsx:DescribeFileSystems", "ec2:RunInstances", "ec2:CreateFleet",
    "ec2:CreateLaunchTemplate", "ec2:DeleteLaunchTemplate", "ec2:TerminateInstances", "ec2:CreateTags",
    "ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface",
}  # fmt: skip


def test_documents_scope_their_resources_to_what_the_config_names():
    documents = iam.load()
    for name, document in documents.items():
        for statement in document["Statement"]:
            if statement["Resource"] == "*":
                assert set(statement["Action"]) <= UNSCOPABLE, (name, statement["Sid"])
            else:
                assert all(not r.endswith((":::*", ":*")) for r in statement["Resource"]), (
                    name,
                    statement["Sid"],
                )
    reconciliation = json.dumps(documents["mwaa-reconciliation"])
    assert "table/recon_ledger" in reconciliation and "example-datalake-raw/recon/landing/*" in reconciliation
    # The audit trail is append-only: whoever erases cannot rewrite it.
    audit = next(s for s in documents["mwaa-gdpr-erasure"]["Statement"] if s["Sid"] == "AuditTrail")
    assert not {"dynamodb:UpdateItem", "dynamodb:DeleteItem"} & set(audit["Action"])


def test_every_aws_only_grant_is_granted_and_says_why():
    documents, justified = iam.load(), iam.aws_only()
    assert set(justified) <= set(documents)
    for name, actions in justified.items():
        granted = {a for s in documents[name]["Statement"] for a in s["Action"]}
        assert set(actions) <= granted, name
        assert all(len(why) > 10 for why in actions.values()), name


def test_readme_iam_section_is_generated_from_include_iam():
    assert iam.readme_section((REPO_ROOT / "README.md").read_text()) == iam.docs()

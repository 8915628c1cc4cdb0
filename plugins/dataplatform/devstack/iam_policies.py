"""The statements of each IAM policy document, built from an environment's config (``iam.py`` names the
documents, renders them to ``include/iam/`` and checks them).

Each statement grants what the code calls (the module that calls it is named beside it) on what the
config names: buckets and prefixes, Glue databases and tables, DynamoDB tables. What only a deployment
knows is a placeholder (``${AccountId}``; ``iam.PLACEHOLDERS``).
"""

from __future__ import annotations

from typing import Any

from dataplatform.config import Settings

MWAA_SHARED = "mwaa-shared"
SPARK_LAUNCH = "mwaa-spark-launch"
JOB_ROLES = ("emr-job-role", "emr-serverless-job-role")


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return bucket, prefix


def buckets(*uris: str | None) -> list[str]:
    """The buckets of the ``s3://`` URIs among ``uris`` (``file://`` and unset ones have none)."""
    return [f"arn:aws:s3:::{_split_s3(u)[0]}" for u in uris if u and u.startswith("s3://")]


def objects(*uris: str | None) -> list[str]:
    """Every object under each ``s3://`` prefix: ``s3://b/reports/`` -> ``arn:aws:s3:::b/reports/*``."""
    return ["arn:aws:s3:::{}/{}*".format(*_split_s3(u)) for u in uris if u and u.startswith("s3://")]


def s3a_tree(*uris: str | None) -> list[str]:
    """A table directory as Hadoop's S3A reads it: the objects under it and the directory's own key (S3A
    heads ``hudi/app_logs`` to tell a file from a directory; a 403 there fails the job)."""
    return [arn for arn in objects(*uris) for arn in (arn.removesuffix("/*"), arn)]


def iceberg_objects(tables: list[tuple[str, str]]) -> list[str]:
    """An Iceberg table's files are under its location, which its Glue table holds, not the config."""
    return [f"arn:aws:s3:::${{IcebergWarehouse}}/{db}/{table}/*" for db, table in sorted(set(tables))]


ICEBERG_BUCKET = "arn:aws:s3:::${IcebergWarehouseBucket}"


class Arns:
    def __init__(self, config: Settings):
        self.scope = f"{config.aws.region}:${{AccountId}}"
        self.region = config.aws.region

    def glue_tables(self, tables: list[tuple[str, str]]) -> list[str]:
        """Glue authorises a table action on the catalog, the database and the table."""
        arns = [f"arn:aws:glue:{self.scope}:catalog"]
        arns += [f"arn:aws:glue:{self.scope}:database/{db}" for db in sorted({db for db, _ in tables})]
        return arns + [f"arn:aws:glue:{self.scope}:table/{db}/{table}" for db, table in sorted(set(tables))]

    def dynamodb(self, *tables: str) -> list[str]:
        """The tables and their indexes (the ledger, GDPR requests and launches query a status index)."""
        return [
            f"arn:aws:dynamodb:{self.scope}:table/{t}{suffix}" for t in tables for suffix in ("", "/index/*")
        ]

    def of(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.scope}:{resource}"


def statement(sid: str, actions: str, resources: list[str] | str) -> dict[str, Any]:
    """An Allow statement; ``actions`` space-separated; ``"*"`` only for actions IAM cannot scope."""
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Action": sorted(set(actions.split())),
        "Resource": resources if resources == "*" else sorted(set(resources)),
    }


def policy(*statements: dict[str, Any]) -> dict[str, Any]:
    """A policy document; a statement left without a resource (the config has no such URI) is dropped."""
    return {"Version": "2012-10-17", "Statement": [s for s in statements if s["Resource"]]}


def policies(config: Settings) -> dict[str, dict[str, Any]]:
    arns = Arns(config)
    return {
        MWAA_SHARED: mwaa_shared(config, arns),
        "mwaa-glue-partition-loader": glue_partition_loader(config, arns),
        "mwaa-reconciliation": reconciliation(config, arns),
        "mwaa-iceberg-maintenance": iceberg_maintenance(config, arns),
        "mwaa-gdpr-erasure": gdpr_erasure(config, arns),
        "mwaa-benchmark-pricing": benchmark_pricing(config, arns),
        "mwaa-lake-health": lake_health(config, arns),
        SPARK_LAUNCH: spark_launch(config, arns),
        **{name: spark_jobs(config, arns) for name in JOB_ROLES},
        "emr-service-role": emr_service_role(),
    }


def mwaa_shared(config: Settings, arns: Arns) -> dict[str, Any]:
    """Run reports (``reports.py``), the alerts every DAG sends (``alerts.py``: they list and read the run's
    reports and publish to the topic) and what MWAA itself needs of its execution role."""
    topic = config.alerts.sns_topic_arn or arns.of("sns", "${AlertsTopicName}")
    return policy(
        statement("RunReports", "s3:PutObject s3:GetObject", objects(config.reports_uri)),
        statement("RunReportsList", "s3:ListBucket", buckets(config.reports_uri)),
        statement("Alerts", "sns:Publish", [topic]),
        statement("MwaaSourceBucket", "s3:GetObject s3:ListBucket s3:GetBucketLocation",
                  ["arn:aws:s3:::${MwaaSourceBucket}", "arn:aws:s3:::${MwaaSourceBucket}/*"]),
        statement("MwaaLogs", "logs:CreateLogGroup logs:CreateLogStream logs:PutLogEvents logs:GetLogEvents "
                  "logs:GetLogRecord logs:GetLogGroupFields logs:GetQueryResults",
                  [arns.of("logs", "log-group:airflow-${MwaaEnvironmentName}-*")]),
        statement("MwaaMetrics", "cloudwatch:PutMetricData logs:DescribeLogGroups", "*"),
        statement("MwaaPublishMetrics", "airflow:PublishMetrics",
                  [arns.of("airflow", "environment/${MwaaEnvironmentName}")]),
        statement("MwaaCeleryQueue", "sqs:ChangeMessageVisibility sqs:DeleteMessage sqs:GetQueueAttributes "
                  "sqs:GetQueueUrl sqs:ReceiveMessage sqs:SendMessage",
                  [f"arn:aws:sqs:{arns.region}:*:airflow-celery-*"]),
    )  # fmt: skip


def glue_partition_loader(config: Settings, arns: Arns) -> dict[str, Any]:
    """``glue/discovery.py`` lists the table locations, the sensor heads success markers,
    ``glue/catalog.py`` registers partitions; ``operators/glue.py``'s msck and crawler modes;
    ``glue/events.py`` sets up and drains the queues of the tables with ``mode: events``."""
    glue = config.glue
    tables = list(glue.tables.values())
    return policy(
        statement("ListTableLocations", "s3:ListBucket", buckets(*(t.location for t in tables))),
        statement("ReadSuccessMarkers", "s3:GetObject", objects(*(t.location for t in tables))),
        statement("RegisterPartitions", "glue:GetTable glue:GetPartitions glue:BatchGetPartition "
                  "glue:BatchCreatePartition", arns.glue_tables([(t.database, t.table) for t in tables])),
        statement("AthenaMsck", "athena:StartQueryExecution athena:GetQueryExecution athena:StopQueryExecution",
                  [arns.of("athena", f"workgroup/{glue.athena_workgroup or 'primary'}")]),
        statement("AthenaResults", "s3:PutObject s3:GetObject s3:AbortMultipartUpload",
                  objects(glue.athena_output_location)),
        statement("AthenaResultsBucket", "s3:GetBucketLocation s3:ListBucket",
                  buckets(glue.athena_output_location)),
        statement("Crawlers", "glue:StartCrawler glue:GetCrawler",
                  [arns.of("glue", f"crawler/{t.crawler_name}") for t in tables if t.crawler_name]),
        statement("EventQueues", "sqs:CreateQueue sqs:GetQueueUrl sqs:GetQueueAttributes sqs:SetQueueAttributes "
                  "sqs:ReceiveMessage sqs:DeleteMessage sqs:ChangeMessageVisibility",
                  [arns.of("sqs", t.events_queue) for t in tables if t.events_queue]),
        statement("EventNotifications", "s3:GetBucketNotification s3:PutBucketNotification",
                  buckets(*(t.location for t in tables if t.events_queue))),
    )  # fmt: skip


def reconciliation(config: Settings, arns: Arns) -> dict[str, Any]:
    """``reconciliation/manifests.py`` reads the landing area, ``ledger.py`` and ``index.py`` the
    ledger and the index, ``pipeline.py`` the work area."""
    recon = config.reconciliation
    return policy(
        statement("Landing", "s3:GetObject", objects(recon.landing_uri)),
        statement("Buckets", "s3:ListBucket", buckets(recon.landing_uri, recon.work_uri)),
        statement("WorkArea", "s3:GetObject s3:PutObject", objects(recon.work_uri)),
        statement("LedgerAndIndex", "dynamodb:CreateTable dynamodb:DescribeTable dynamodb:GetItem dynamodb:PutItem "
                  "dynamodb:UpdateItem dynamodb:DeleteItem dynamodb:ConditionCheckItem dynamodb:Query "
                  "dynamodb:BatchGetItem dynamodb:BatchWriteItem", arns.dynamodb(recon.ledger_table, recon.index_table)),
    )  # fmt: skip


def iceberg_maintenance(config: Settings, arns: Arns) -> dict[str, Any]:
    """pyiceberg against the Glue catalog (``iceberg/``), the object tags and lifecycle rule
    (``s3/objects.py``), the maintenance state; archive tables (``iceberg/archive.py``)."""
    tables = [(t.database, t.table) for t in config.iceberg.tables.values()]
    return policy(
        statement("IcebergCatalog", "glue:GetTable glue:GetTables glue:UpdateTable glue:CreateTable",
                  arns.glue_tables(tables + [(db, "*") for db, _ in tables])),
        statement("IcebergFiles", "s3:GetObject s3:PutObject s3:DeleteObject s3:GetObjectTagging "
                  "s3:PutObjectTagging s3:DeleteObjectTagging", iceberg_objects(tables)),
        statement("IcebergBuckets", "s3:ListBucket s3:GetLifecycleConfiguration s3:PutLifecycleConfiguration",
                  [ICEBERG_BUCKET]),
        statement("MaintenanceState", "s3:GetObject s3:PutObject s3:DeleteObject", objects(config.iceberg.state_uri)),
        # operators/iceberg_spark.py: an earlier attempt's Spark job report must not pass for this one's.
        statement("StaleJobReports", "s3:DeleteObject", objects(config.reports_uri + "iceberg_maintenance/")),
        statement("MaintenanceStateBucket", "s3:ListBucket", buckets(config.iceberg.state_uri)),
    )  # fmt: skip


def gdpr_erasure(config: Settings, arns: Arns) -> dict[str, Any]:
    """``gdpr/requests.py`` and ``audit.py`` (DynamoDB), ``gdpr/iceberg_erasure.py`` (pyiceberg),
    ``gdpr/subject_files.py`` and ``verify.py`` (every version of the tables' objects)."""
    gdpr = config.gdpr
    iceberg = [(d.database, d.table) for d in gdpr.datasets.values() if d.format == "iceberg"]
    hudi = [d.location for d in gdpr.datasets.values() if d.format == "hudi"]
    return policy(
        statement("Requests", "dynamodb:CreateTable dynamodb:DescribeTable dynamodb:GetItem dynamodb:PutItem "
                  "dynamodb:UpdateItem dynamodb:Query", arns.dynamodb(gdpr.requests_table)),
        # The audit trail is append-only: no UpdateItem, no DeleteItem.
        statement("AuditTrail", "dynamodb:CreateTable dynamodb:DescribeTable dynamodb:PutItem dynamodb:Query",
                  arns.dynamodb(gdpr.audit_table)),
        statement("IcebergCatalog", "glue:GetTable glue:GetTables glue:UpdateTable",
                  arns.glue_tables(iceberg + [(db, "*") for db, _ in iceberg])),
        statement("TableFiles", "s3:GetObject s3:GetObjectVersion s3:PutObject s3:DeleteObject "
                  "s3:DeleteObjectVersion", iceberg_objects(iceberg) + objects(*hudi)),
        statement("TableBuckets", "s3:ListBucket s3:ListBucketVersions s3:GetBucketVersioning",
                  [ICEBERG_BUCKET, *buckets(*hudi)]),
        statement("WorkArea", "s3:GetObject s3:PutObject s3:DeleteObject", objects(gdpr.work_uri)),
        statement("HmacKey", "secretsmanager:GetSecretValue",
                  [arns.of("secretsmanager", f"secret:airflow/connections/{gdpr.hmac_conn_id}-*")]),
    )  # fmt: skip


def benchmark_pricing(config: Settings, arns: Arns) -> dict[str, Any]:
    """``pricing/launches.py`` (DynamoDB), ``pricing/collect.py`` (what each launch ran on: Batch, ECS,
    EC2, EBS, FSx; IAM cannot scope these Describe calls), ``pricing/prices.py`` (Price List, cache)."""
    pricing = config.pricing
    return policy(
        statement("Launches", "dynamodb:CreateTable dynamodb:DescribeTable dynamodb:GetItem dynamodb:Query "
                  "dynamodb:UpdateItem", arns.dynamodb(pricing.launches_table)),
        statement("PriceCache", "s3:GetObject s3:PutObject", objects(pricing.price_cache_uri)),
        statement("LaunchResources", "batch:DescribeJobs batch:DescribeJobQueues batch:DescribeComputeEnvironments "
                  "ecs:DescribeContainerInstances ecs:ListContainerInstances ec2:DescribeInstances "
                  "ec2:DescribeVolumes fsx:DescribeFileSystems ec2:DescribeSpotPriceHistory pricing:GetProducts", "*"),
    )  # fmt: skip


def lake_health(config: Settings, arns: Arns) -> dict[str, Any]:
    """``health/figures.py`` reads every pipeline's state (read-only: the ledger, the requests and the
    launches through their status indexes, Iceberg metadata files through the Glue catalog, Glue
    partitions); ``health/open_findings.py`` keeps the open findings. Reports and the topic: shared."""
    recon, gdpr, pricing, health = config.reconciliation, config.gdpr, config.pricing, config.health
    iceberg = [(t.database, t.table) for t in config.iceberg.tables.values()]
    glue = [(t.database, t.table) for t in config.glue.tables.values()]
    return policy(
        statement("PipelineState", "dynamodb:Query dynamodb:GetItem", arns.dynamodb(recon.ledger_table, gdpr.requests_table,
                  pricing.launches_table)),
        statement("OpenFindings", "dynamodb:CreateTable dynamodb:DescribeTable dynamodb:Scan dynamodb:PutItem "
                  "dynamodb:UpdateItem dynamodb:DeleteItem", arns.dynamodb(health.findings_table)),
        # figures.py reads the tables' metadata locations with one GetTables per database.
        statement("IcebergMetadata", "glue:GetTables",
                  arns.glue_tables(iceberg + [(db, "*") for db, _ in iceberg])),
        statement("IcebergMetadataFiles", "s3:GetObject", iceberg_objects(iceberg)),
        statement("GluePartitions", "glue:BatchGetPartition", arns.glue_tables(glue)),
    )  # fmt: skip


def spark_launch(config: Settings, arns: Arns) -> dict[str, Any]:
    """``operators/spark.py`` on the EMR backends (the provider's EMR operators), and each job's cost
    record (``pricing/jobs.py``)."""
    spark, pricing = config.spark, config.pricing
    application = "/applications/${EmrServerlessApplicationId}"
    return policy(
        statement("JobCode", "s3:GetObject s3:PutObject", objects(spark.code_uri)),
        statement("EmrClusters", "elasticmapreduce:RunJobFlow elasticmapreduce:AddJobFlowSteps "
                  "elasticmapreduce:DescribeStep elasticmapreduce:DescribeCluster elasticmapreduce:TerminateJobFlows "
                  "elasticmapreduce:ListSteps elasticmapreduce:ListInstances elasticmapreduce:ListInstanceGroups "
                  "elasticmapreduce:ListInstanceFleets", [arns.of("elasticmapreduce", "cluster/*")]),
        statement("EmrServerless", "emr-serverless:GetApplication emr-serverless:StartApplication "
                  "emr-serverless:StartJobRun emr-serverless:GetJobRun emr-serverless:CancelJobRun "
                  "emr-serverless:ListJobRuns",
                  [arns.of("emr-serverless", application), arns.of("emr-serverless", f"{application}/jobruns/*")]),
        statement("PassJobRoles", "iam:PassRole",
                  ["arn:aws:iam::${AccountId}:role/EMR_DefaultRole_V2", "arn:aws:iam::${AccountId}:role/EMR_EC2_DefaultRole",
                   spark.emr_serverless.execution_role_arn or "arn:aws:iam::${AccountId}:role/emr-serverless-job-role"]),
        statement("JobCosts", "dynamodb:CreateTable dynamodb:DescribeTable dynamodb:PutItem",
                  arns.dynamodb(pricing.job_costs_table)),
        statement("JobPrices", "pricing:GetProducts ec2:DescribeSpotPriceHistory", "*"),
        statement("JobPriceCache", "s3:GetObject s3:PutObject", objects(pricing.price_cache_uri)),
    )  # fmt: skip


def spark_jobs(config: Settings, arns: Arns) -> dict[str, Any]:
    """What the jobs in ``spark_jobs/`` call: the reconciliation jobs' S3 areas and DynamoDB index, the
    Iceberg tables through the Glue catalog, the Hudi tables' files, the job specs they read."""
    recon, gdpr = config.reconciliation, config.gdpr
    tables = [(t.database, t.table) for t in config.iceberg.tables.values()]
    tables += [(d.database, d.table) for d in gdpr.datasets.values() if d.format == "iceberg"]
    hudi = [d.location for d in gdpr.datasets.values() if d.format == "hudi"]
    return policy(
        statement("ReconData", "s3:GetObject s3:PutObject s3:DeleteObject", objects(recon.landing_uri, recon.work_uri)),
        # spark_jobs/recon_prefetch.py reads the index; the worker writes it (reconciliation/index.py).
        statement("ReconIndex", "dynamodb:BatchGetItem", arns.dynamodb(recon.index_table)),
        statement("IcebergCatalog", "glue:GetTable glue:UpdateTable", arns.glue_tables(tables)),
        statement("TableFiles", "s3:GetObject s3:PutObject s3:DeleteObject", iceberg_objects(tables) + s3a_tree(*hudi)),
        # spark_jobs/iceberg_maintenance.py: Iceberg's S3FileIO tags created and unreferenced files.
        statement("IcebergTags", "s3:GetObjectTagging s3:PutObjectTagging",
                  iceberg_objects([(t.database, t.table) for t in config.iceberg.tables.values()])),
        statement("JobSpecs", "s3:GetObject s3:PutObject", objects(gdpr.work_uri, config.reports_uri, config.spark.code_uri)),
        statement("Buckets", "s3:ListBucket", [ICEBERG_BUCKET, *buckets(recon.landing_uri, recon.work_uri, *hudi)]),
        statement("SparkLogs", "s3:PutObject", objects(config.spark.emr.log_uri)),
    )  # fmt: skip


def emr_service_role() -> dict[str, Any]:
    """What EMR does with its service role when it provisions a transient cluster (a subset of AWS's
    ``AmazonEMRServicePolicy_v2`` for instance groups and fleets). EC2 scopes these by tags, not ARNs."""
    return policy(
        statement("ProvisionClusters", "ec2:RunInstances ec2:CreateFleet ec2:CreateLaunchTemplate "
                  "ec2:DeleteLaunchTemplate ec2:DescribeInstances ec2:TerminateInstances ec2:CreateTags "
                  "ec2:DescribeSubnets ec2:DescribeSecurityGroups ec2:DescribeImages ec2:CreateNetworkInterface "
                  "ec2:DeleteNetworkInterface ec2:DescribeNetworkInterfaces ec2:DescribeVpcs", "*"),
        statement("PassInstanceProfile", "iam:PassRole", ["arn:aws:iam::${AccountId}:role/EMR_EC2_DefaultRole"]),
    )  # fmt: skip

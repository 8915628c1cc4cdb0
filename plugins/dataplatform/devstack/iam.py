"""The IAM policy documents of the platform, built from an environment's config.

``include/iam/<document>.json`` are these documents rendered for ``include/config/aws.yaml``
(``python -m dataplatform.devstack.iam write``): buckets, prefixes, Glue databases and tables and DynamoDB
tables are the config's; what only a deployment knows stays a placeholder (``${AccountId}``,
``${IcebergWarehouse}``, ...; see ``PLACEHOLDERS``). The IAM check (``iam_check.py``) renders the same
documents for the config the demo ran on, so the requests it holds to them are checked by their local
names. ``include/iam/aws-only.json`` lists, per document, the granted actions no local run can call and
the AWS-only path that needs each. ``python -m dataplatform.devstack.iam docs`` prints the README's IAM
section, generated from the files.

Roles: the Airflow workers' (MWAA execution role) policies, one per pipeline plus what every pipeline
shares and what the pipelines that launch Spark jobs share; the Spark jobs' role (EMR's EC2 instance
profile, and the same statements as EMR Serverless's job runtime role); EMR's service role.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataplatform.config import REPO_ROOT, Settings, config_path, load_settings
from dataplatform.devstack.iam_policies import JOB_ROLES, MWAA_SHARED, SPARK_LAUNCH, policies

IAM_DIR = REPO_ROOT / "include" / "iam"
AWS_ONLY_FILE = "aws-only.json"

PLACEHOLDERS = {
    "AccountId": "the AWS account id",
    "MwaaEnvironmentName": "the MWAA environment's name",
    "MwaaSourceBucket": "the MWAA environment's DAGs bucket",
    "IcebergWarehouse": "bucket/prefix under which the Iceberg tables' locations are (the Glue tables say)",
    "IcebergWarehouseBucket": "the bucket of ${IcebergWarehouse}",
    "EmrServerlessApplicationId": "spark.emr_serverless.application_id (created outside the platform)",
    "AlertsTopicName": "the topic of alerts.sns_topic_arn (empty in the config: alerts are only logged)",
}


@dataclass(frozen=True)
class Document:
    name: str  # include/iam/<name>.json
    attached_to: str  # the role that carries it
    what: str  # one line for the README


@dataclass(frozen=True)
class Role:
    """Who makes calls: the documents its calls are held to, and which DAGs' calls are its."""

    name: str
    documents: tuple[str, ...]
    dag_ids: tuple[str, ...] = ()


DOCUMENTS: tuple[Document, ...] = (
    Document(
        MWAA_SHARED, "MWAA execution role", "what every pipeline's tasks need: run reports, the environment"
    ),
    Document("mwaa-glue-partition-loader", "MWAA execution role", "glue_partition_loader"),
    Document("mwaa-reconciliation", "MWAA execution role", "recon_stateless, recon_stateful"),
    Document(
        "mwaa-iceberg-maintenance", "MWAA execution role", "iceberg_maintenance, iceberg_archive_register"
    ),
    Document("mwaa-gdpr-erasure", "MWAA execution role", "gdpr_erasure"),
    Document("mwaa-benchmark-pricing", "MWAA execution role", "benchmark_pricing"),
    Document("mwaa-lake-health", "MWAA execution role", "lake_health (reads every pipeline's state)"),
    Document(
        SPARK_LAUNCH, "MWAA execution role", "launching Spark jobs on EMR / EMR Serverless and pricing them"
    ),
    Document("emr-job-role", "EMR EC2 instance profile", "the Spark jobs: Hudi / Iceberg / reconciliation"),
    Document(
        "emr-serverless-job-role", "EMR Serverless job runtime role", "the same Spark jobs on EMR Serverless"
    ),
    Document("emr-service-role", "EMR service role", "EMR provisioning a transient cluster"),
)

_PIPELINES = {
    "mwaa-glue-partition-loader": ("glue_partition_loader",),
    "mwaa-reconciliation": ("recon_stateless", "recon_stateful"),
    "mwaa-iceberg-maintenance": ("iceberg_maintenance", "iceberg_archive_register"),
    "mwaa-gdpr-erasure": ("gdpr_erasure",),
    "mwaa-benchmark-pricing": ("benchmark_pricing",),
    "mwaa-lake-health": ("lake_health",),
}
_LAUNCHES_SPARK = {"mwaa-reconciliation", "mwaa-iceberg-maintenance", "mwaa-gdpr-erasure"}

ROLES: tuple[Role, ...] = (
    *(
        Role(name, (name, MWAA_SHARED, *((SPARK_LAUNCH,) if name in _LAUNCHES_SPARK else ())), dag_ids)
        for name, dag_ids in _PIPELINES.items()
    ),
    *(Role(name, (name,)) for name in JOB_ROLES),
)
ROLE_OF_DAG = {dag_id: role.name for role in ROLES for dag_id in role.dag_ids}


# -- rendering, the local names, the README --------------------------------------------------------------


def write(config: Settings, directory: Path = IAM_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, document in policies(config).items():
        path = directory / f"{name}.json"
        path.write_text(json.dumps(document, indent=2) + "\n")
        written.append(path)
    return written


def aws_settings() -> Settings:
    return load_settings(config_path("aws"))


def local_settings() -> Settings:
    return load_settings(config_path("local"))


def local_placeholders(config: Settings) -> dict[str, str]:
    """Where the local stack puts what AWS leaves to the deployment (the demo's Iceberg warehouse)."""
    from dataplatform.devstack.seed import iceberg_demo_location

    name = next(iter(config.iceberg.tables))
    policy = config.iceberg.tables[name]
    location = iceberg_demo_location(config, name)
    warehouse = location.removeprefix("s3://").removesuffix(f"/{policy.database}/{policy.table}")
    return {
        "AccountId": "123456789012",  # moto's
        "IcebergWarehouse": warehouse,
        "IcebergWarehouseBucket": warehouse.split("/", 1)[0],
        # MWAA's own resources and an EMR Serverless application do not exist locally: names that match
        # nothing the demo touches, so no local call is granted through them.
        "MwaaEnvironmentName": "no-local-mwaa",
        "MwaaSourceBucket": "no-local-mwaa-dags-bucket",
        "EmrServerlessApplicationId": "no-local-application",
    }


def fill(document: Any, values: dict[str, str]) -> Any:
    """``document`` with the placeholders ``values`` names replaced (the others stay)."""
    text = json.dumps(document)
    text = re.sub(r"\$\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), text)
    return json.loads(text)


def aws_only(directory: Path = IAM_DIR) -> dict[str, dict[str, str]]:
    return json.loads((directory / AWS_ONLY_FILE).read_text())["documents"]


def load(directory: Path = IAM_DIR) -> dict[str, dict[str, Any]]:
    return {d.name: json.loads((directory / f"{d.name}.json").read_text()) for d in DOCUMENTS}


def local_documents() -> dict[str, dict[str, Any]]:
    """The documents for the local config, with the local stack's values for the deploy-time ones."""
    config = local_settings()
    return {name: fill(doc, local_placeholders(config)) for name, doc in policies(config).items()}


README_BEGIN = "<!-- BEGIN generated by `python -m dataplatform.devstack.iam docs` from include/iam/ -->"
README_END = "<!-- END generated IAM section -->"


def docs(directory: Path = IAM_DIR) -> str:
    """The README's IAM section: per document, its role, its statements and the AWS-only grants."""
    documents, justified = load(directory), aws_only(directory)
    lines = [README_BEGIN, ""]
    lines.append("| policy document | attached to | for |")
    lines.append("|---|---|---|")
    for d in DOCUMENTS:
        lines.append(
            f"| [`include/iam/{d.name}.json`](include/iam/{d.name}.json) | {d.attached_to} | {d.what} |"
        )
    lines.append("")
    lines.append(
        "Placeholders left to the deployment: "
        + "; ".join(f"`${{{k}}}` {v}" for k, v in PLACEHOLDERS.items())
        + "."
    )
    for d in DOCUMENTS:
        lines += ["", f"**{d.name}** ({d.attached_to}):", ""]
        for statement in documents[d.name]["Statement"]:
            resources = statement["Resource"]
            resources = [resources] if isinstance(resources, str) else resources
            actions = ", ".join(f"`{a}`" for a in statement["Action"])
            lines.append(f"- {statement['Sid']}: {actions} on " + ", ".join(f"`{r}`" for r in resources))
        by_reason: dict[str, list[str]] = {}
        for action, why in sorted(justified.get(d.name, {}).items()):
            by_reason.setdefault(why, []).append(f"`{action}`")
        for why, actions in by_reason.items():
            lines.append(f"- AWS-only, never called locally: {', '.join(actions)}: {why}")
    lines += ["", README_END]
    return "\n".join(lines)


def readme_section(readme: str) -> str:
    start, end = readme.index(README_BEGIN), readme.index(README_END) + len(README_END)
    return readme[start:end]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataplatform.devstack.iam", description=__doc__)
    parser.add_argument("command", choices=("write", "docs", "readme"),
                        help="write: render include/iam/ for aws.yaml; docs: print the README section; "
                             "readme: replace the README's generated section")  # fmt: skip
    args = parser.parse_args(argv)
    if args.command == "write":
        for path in write(aws_settings()):
            print(path.relative_to(REPO_ROOT))
    elif args.command == "docs":
        print(docs())
    else:
        readme = REPO_ROOT / "README.md"
        text = readme.read_text()
        readme.write_text(text.replace(readme_section(text), docs()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

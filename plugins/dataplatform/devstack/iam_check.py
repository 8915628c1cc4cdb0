"""Least privilege, checked: every AWS request the demo's DAG runs made, held to the IAM policy of the
role that would make it in AWS.

The fault-injecting endpoint's request log (``MotoServer(request_log=...)``, one JSON line per signed AWS
request, labelled with the DAG run that made it) is the evidence. Each request is mapped to the IAM
actions it needs and, where the log says (S3's path), the resource; then:

- ``missing_grants``: a call whose action (on that resource) the role's policy does not allow;
- ``iam_unused_grants``: an action a policy grants that no call used and that ``aws-only.json`` does not
  list with the AWS-only path that needs it (EMR, Athena MSCK, crawlers, the Price List API, ...).

Which role: calls from Spark jobs (the JVM's AWS SDK, ``aws-sdk-java``, or a job's boto3, tagged
``app/dataplatform-spark-job`` by ``spark.local_spark_env``) are the job role's (EMR's instance profile),
every other call is the Airflow worker's: the shared MWAA policy plus the policy of the pipeline whose
DAG made it. Requests made while seeding the demo or by an operator's CLI are not checked.

``check(request_log_path, policies_dir)`` is the one entry point (``make chaos`` calls it); the CLI
``python -m dataplatform.devstack.iam_check <request_log> [--policies DIR]`` prints its JSON. Imports no
Airflow.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataplatform.devstack import iam

SPARK_JOB_AGENT_MARKS = ("aws-sdk-java", "app/dataplatform-spark-job")


@dataclass(frozen=True)
class Need:
    """What one request needs: any one of ``actions`` (all count as used: a DeleteObjects may delete
    current objects or versions, the log does not say which), on ``resource`` when the log names it.

    ``resource_is_prefix``: only the start of the resource is known (a DeleteObjects names its bucket,
    its keys are in the body); a grant on anything under it satisfies the need."""

    actions: tuple[str, ...]
    resource: str | None = None
    resource_is_prefix: bool = False


# -- requests -> actions -------------------------------------------------------------------------------

# S3 operations whose IAM action is not s3:<Operation>; "{v}" becomes "Version" when the request names a
# versionId (GetObject?versionId= is s3:GetObjectVersion).
_S3_ACTIONS: dict[str, tuple[str, ...]] = {
    "ListObjects": ("s3:ListBucket",),
    "ListObjectsV2": ("s3:ListBucket",),
    "HeadBucket": ("s3:ListBucket",),
    "ListObjectVersions": ("s3:ListBucketVersions",),
    "ListMultipartUploads": ("s3:ListBucketMultipartUploads",),
    "ListParts": ("s3:ListMultipartUploadParts",),
    "ListBuckets": ("s3:ListAllMyBuckets",),
    "GetObject": ("s3:GetObject{v}",),
    "HeadObject": ("s3:GetObject{v}",),
    "GetObjectAttributes": ("s3:GetObject{v}Attributes",),
    "PutObject": ("s3:PutObject",),
    "CreateMultipartUpload": ("s3:PutObject",),
    "UploadPart": ("s3:PutObject",),
    "CompleteMultipartUpload": ("s3:PutObject",),
    "AbortMultipartUpload": ("s3:AbortMultipartUpload",),
    "DeleteObject": ("s3:DeleteObject{v}",),
    "DeleteObjects": ("s3:DeleteObject", "s3:DeleteObjectVersion"),
    "GetObjectTagging": ("s3:GetObject{v}Tagging",),
    "PutObjectTagging": ("s3:PutObject{v}Tagging",),
    "DeleteObjectTagging": ("s3:DeleteObject{v}Tagging",),
    "GetBucketLifecycle": ("s3:GetLifecycleConfiguration",),
    "GetBucketLifecycleConfiguration": ("s3:GetLifecycleConfiguration",),
    "PutBucketLifecycle": ("s3:PutLifecycleConfiguration",),
    "PutBucketLifecycleConfiguration": ("s3:PutLifecycleConfiguration",),
    "DeleteBucketLifecycle": ("s3:PutLifecycleConfiguration",),
}
_S3_OBJECT_OPERATIONS = {
    "GetObject", "HeadObject", "GetObjectAttributes", "PutObject", "CreateMultipartUpload", "UploadPart",
    "CompleteMultipartUpload", "AbortMultipartUpload", "ListParts", "DeleteObject", "GetObjectTagging",
    "PutObjectTagging", "DeleteObjectTagging", "CopyObject", "UploadPartCopy",
}  # fmt: skip

# The IAM prefix of each SigV4 signing name that differs from it.
_IAM_PREFIX = {"monitoring": "cloudwatch", "email": "ses"}

# Non-S3 operations that need other actions than <prefix>:<Operation>. A transaction needs the item
# actions of what it holds (AWS: "permissions for Put, Update, Delete and Get are governed by the
# underlying PutItem, UpdateItem, DeleteItem and GetItem"); the log does not carry the body.
_OTHER_ACTIONS: dict[tuple[str, str], tuple[Need, ...]] = {
    ("dynamodb", "TransactWriteItems"): (
        Need(
            ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem")
        ),
    ),
    ("dynamodb", "TransactGetItems"): (Need(("dynamodb:GetItem",)),),
    # Launching with roles: EMR assumes the service role and the instance profile's role, EMR Serverless
    # the job's execution role, so the caller must be allowed to pass them.
    ("elasticmapreduce", "RunJobFlow"): (Need(("elasticmapreduce:RunJobFlow",)), Need(("iam:PassRole",))),
    ("emr-serverless", "StartJobRun"): (Need(("emr-serverless:StartJobRun",)), Need(("iam:PassRole",))),
}


def _s3_needs(operation: str, path: str, query: Iterable[str]) -> tuple[Need, ...]:
    bucket, _, key = path.lstrip("/").partition("/")
    version = "Version" if "versionId" in set(query) else ""
    bucket_arn = f"arn:aws:s3:::{bucket}"
    if operation in ("CopyObject", "UploadPartCopy"):
        # The source is in the x-amz-copy-source header, which the log does not keep: action only.
        return (Need(("s3:PutObject",), f"{bucket_arn}/{key}"), Need(("s3:GetObject",)))
    actions = tuple(a.format(v=version) for a in _S3_ACTIONS.get(operation, (f"s3:{operation}",)))
    if operation == "ListBuckets":
        return (Need(actions, "*"),)
    if operation == "DeleteObjects":
        return (Need(actions, f"{bucket_arn}/", resource_is_prefix=True),)
    if operation in _S3_OBJECT_OPERATIONS:
        return (Need(actions, f"{bucket_arn}/{key}"),)
    return (Need(actions, bucket_arn),)


def needs_of(request: dict[str, Any]) -> tuple[Need, ...]:
    """The IAM actions (and resource, where derivable) one request-log line needs."""
    service, operation = request["service"], request["operation"]
    if not operation:
        raise ValueError(f"request without an operation name: {request}")
    if service == "s3":
        return _s3_needs(operation, request.get("path") or "/", request.get("query") or ())
    if (service, operation) in _OTHER_ACTIONS:
        return _OTHER_ACTIONS[(service, operation)]
    return (Need((f"{_IAM_PREFIX.get(service, service)}:{operation}",)),)


def roles_of(request: dict[str, Any]) -> tuple[str, ...]:
    """The roles that make this call in AWS (both job roles for a Spark job's: the same job runs on EMR
    or EMR Serverless); none for calls not checked (seeding, an operator's CLI)."""
    role = iam.ROLE_OF_DAG.get(request.get("phase") or "")
    if role is None:
        return ()
    if any(mark in (request.get("user_agent") or "") for mark in SPARK_JOB_AGENT_MARKS):
        return iam.JOB_ROLES
    return (role,)


# -- policies ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    action: str
    resources: tuple[re.Pattern, ...]
    resource_prefixes: tuple[str, ...]  # each pattern's text up to its first wildcard

    def allows(self, action: str, need: Need) -> bool:
        if self.action != action:
            return False
        if need.resource is None:
            return True
        if need.resource_is_prefix:
            return any(
                p.startswith(need.resource) or need.resource.startswith(p) for p in self.resource_prefixes
            )
        return any(pattern.fullmatch(need.resource) for pattern in self.resources)


def _resource_pattern(resource: str) -> tuple[re.Pattern, str]:
    """IAM's wildcards: ``*`` any characters, ``?`` one. A deploy-time placeholder left in (``${AccountId}``)
    matches only itself: no recorded request can be granted through a value the policy does not know."""
    text = resource
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text)
    return re.compile(regex, re.DOTALL), re.split(r"[*?]", text, maxsplit=1)[0]


def grants_of(document: dict[str, Any]) -> list[Grant]:
    grants = []
    for statement in document["Statement"]:
        if statement.get("Effect") != "Allow":
            continue
        actions, resources = statement["Action"], statement["Resource"]
        patterns = [_resource_pattern(r) for r in ([resources] if isinstance(resources, str) else resources)]
        for action in [actions] if isinstance(actions, str) else actions:
            grants.append(
                Grant(action, tuple(p for p, _ in patterns), tuple(prefix for _, prefix in patterns))
            )
    return grants


# -- the check -----------------------------------------------------------------------------------------


def read_request_log(path: Path) -> Iterator[dict[str, Any]]:
    with open(path) as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not a JSON line: {exc}") from None


def check(request_log_path: str | Path, policies_dir: str | Path | None = None) -> dict[str, Any]:
    """Hold every checked request in ``request_log_path`` to its role's policy documents.

    ``policies_dir`` (a directory like ``include/iam/``) defaults to the documents rendered for the
    config the demo runs on (``local``: the same statements as ``include/iam/``, with the local buckets,
    prefixes and tables), so resources are checked by the names the requests carry. The AWS-only list
    is ``include/iam/aws-only.json`` (or the one in ``policies_dir``). Returns ``{"iam_actions_granted",
    "iam_actions_used", "iam_unused_grants", "missing_grants", "aws_only_but_called", "requests_checked",
    "requests_unchecked", "documents"}`` (``documents``: granted, used and AWS-only actions of each).
    """
    if policies_dir is None:
        documents, justified = iam.local_documents(), iam.aws_only()
    else:
        documents, justified = iam.load(Path(policies_dir)), iam.aws_only(Path(policies_dir))
    grants = {name: grants_of(document) for name, document in documents.items()}
    roles = {role.name: role for role in iam.ROLES}
    used: dict[str, set[str]] = defaultdict(set)  # per document: the actions a call used through it
    missing: dict[tuple[str, str, str], Counter] = defaultdict(Counter)  # (role, action, phase): resources
    checked = unchecked = 0
    for request in read_request_log(Path(request_log_path)):
        request_roles = roles_of(request)
        if not request_roles:
            unchecked += 1
            continue
        checked += 1
        for role, need in ((r, n) for r in request_roles for n in needs_of(request)):
            # A call uses the first of its role's documents that allows it (the pipeline's own comes
            # first): without a resource in the log (DynamoDB, Glue) several documents may allow it.
            granting = [
                (name, action)
                for name in roles[role].documents
                for action in need.actions
                if any(grant.allows(action, need) for grant in grants[name])
            ]
            for name, action in granting:
                if name == granting[0][0]:
                    used[name].add(action)
            if not granting:
                missing[(role, " | ".join(need.actions), request["phase"])][need.resource or ""] += 1
    return _result(grants, justified, used, missing, checked, unchecked)


def _result(grants, justified, used, missing, checked: int, unchecked: int) -> dict[str, Any]:
    unused, called_anyway, per_document = [], [], {}
    for name, document_grants in grants.items():
        granted = sorted({grant.action for grant in document_grants})
        aws_only = [a for a in granted if a not in used[name] and a in justified.get(name, {})]
        unused += [f"{name}: {a}" for a in granted if a not in used[name] and a not in aws_only]
        # An "AWS-only" grant that a local call used: the list is wrong, say so.
        called_anyway += [f"{name}: {a}" for a in justified.get(name, {}) if a in used[name]]
        per_document[name] = {"granted": len(granted), "used": len(used[name]), "aws_only": len(aws_only)}
    return {
        # Summed over the documents: an action two documents grant counts in each that a call used.
        "iam_actions_granted": sum(figures["granted"] for figures in per_document.values()),
        "iam_actions_used": sum(figures["used"] for figures in per_document.values()),
        "iam_unused_grants": unused,
        # One entry per role, action and DAG: the requests, how many distinct resources, the first one.
        "missing_grants": [
            {
                "role": role,
                "action": actions,
                "phase": phase,
                "requests": sum(resources.values()),
                "resources": len(resources),
                "resource": next(iter(resources)),
            }
            for (role, actions, phase), resources in sorted(missing.items())
        ],
        "aws_only_but_called": called_anyway,
        "requests_checked": checked,
        "requests_unchecked": unchecked,
        "documents": per_document,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataplatform.devstack.iam_check", description=__doc__)
    parser.add_argument("request_log", type=Path, help="the endpoint's request log (JSON lines)")
    parser.add_argument(
        "--policies",
        type=Path,
        default=None,
        help="policy directory (default: rendered for the local config)",
    )
    args = parser.parse_args(argv)
    result = check(args.request_log, args.policies)
    print(json.dumps(result, indent=2))
    return 1 if result["missing_grants"] or result["iam_unused_grants"] else 0


if __name__ == "__main__":
    sys.exit(main())

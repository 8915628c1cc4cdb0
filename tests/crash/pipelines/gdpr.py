"""GDPR erasure: one run of the DAG on the pyiceberg datasets (accept the trigger form's subject ids, claim
the requests, erase each dataset in its own mapped task, finish the requests), through the functions and
the operator the tasks call."""

from __future__ import annotations

import json
from types import SimpleNamespace

from tests.crash.harness import Pipeline, Step
from tests.crash.pipelines import without_clock
from tests.crash.pipelines.lake_files import current_uris, object_shapes, reachable_uris, table_rows

DAG_ID = "gdpr_erasure"
RUN_ID = "manual__2024-03-02T03:00:00+00:00"
PARAMS = {"subject_ids": ["cust-000004", "cust-000017"], "datasets": []}


def _context(inputs: dict) -> dict:
    return {
        "dag": SimpleNamespace(dag_id=DAG_ID),
        "run_id": RUN_ID,
        "ti": SimpleNamespace(try_number=inputs["_try"]),
    }


def seed(lake) -> None:
    from dataplatform.devstack.seed import ensure_bucket, seed_gdpr

    ensure_bucket(lake.s3, lake.settings.reports_uri.removeprefix("s3://").split("/")[0])
    seed_gdpr(lake.catalog, lake.s3, lake.settings)


def accept_requests(inputs: dict) -> dict:
    from dataplatform.operators.gdpr import accept_requests

    return accept_requests(PARAMS, RUN_ID)


def claim_requests(inputs: dict) -> list[str]:
    from dataplatform.operators.gdpr import claim

    return claim(RUN_ID)


def pyiceberg_datasets(inputs: dict) -> list[str]:
    from dataplatform.config import settings

    datasets = settings().gdpr.datasets
    return [key for key in inputs["accept_requests"]["datasets"] if datasets[key].engine == "pyiceberg"]


def erase_iceberg(inputs: dict, dataset: str) -> dict:
    from dataplatform.operators.gdpr import GdprIcebergErasureOperator

    operator = GdprIcebergErasureOperator(
        task_id="erase_iceberg", dataset=dataset, request_ids=inputs["claim_requests"]
    )
    return operator.execute(_context(inputs))


def finish_requests(inputs: dict) -> dict:
    from dataplatform.operators.gdpr import finish_requests

    return finish_requests(inputs["claim_requests"], _context(inputs))


def snapshot(lake) -> dict:
    """Requests (status, progress), the audit trail per request and dataset (the last attempt's record),
    each dataset's rows, the shape of the objects its metadata reaches and their versions, and leftover
    objects holding a subject."""
    gdpr = lake.settings.gdpr
    requests = {}
    for item in lake.items(gdpr.requests_table):
        record = without_clock(json.loads(json.dumps(item, default=str)))
        for progress in record.get("progress", {}).values():
            for key in ("commit", "expired_snapshots", "try_number"):
                progress.pop(key, None)
        requests[item["request_id"]] = record
    # One audit record per attempt; each says what the run's erasure did (a retry after the delete
    # committed reports that delete's rows too): the last attempt's record must match.
    last: dict[str, dict] = {}
    for record in sorted(lake.items(gdpr.audit_table), key=lambda r: int(r["try_number"])):
        last[f"{record['request_id']}/{record['dataset']}"] = record
    audit = {
        key: {"outcome": record["outcome"], "rows_deleted": int(record["rows_deleted"])}
        for key, record in last.items()
    }
    datasets = {}
    for key, dataset in gdpr.datasets.items():
        table = lake.catalog.load_table(dataset.identifier)
        reachable = reachable_uris(table)
        # Files a killed commit wrote and never committed are garbage for orphan cleanup, as after any
        # Iceberg writer that dies before its commit: compared apart, and none may hold a subject's row.
        leftovers = current_uris(lake, table.location()) - reachable
        datasets[key] = {
            "rows": table_rows(lake, dataset.identifier),
            "objects": object_shapes(lake, table.location(), versions=True, only=reachable),
            "leftovers_with_subjects": sorted(uri for uri in leftovers if _names_subjects(lake, uri)),
        }
    return {"requests": requests, "audit": audit, "datasets": datasets}


PIPELINE = Pipeline(
    name="gdpr",
    seed=seed,
    steps=(
        Step("accept_requests", accept_requests),
        Step("claim_requests", claim_requests),
        Step("pyiceberg_datasets", pyiceberg_datasets),
        Step("erase_iceberg", erase_iceberg, expand=lambda inputs: inputs["pyiceberg_datasets"]),
        Step("finish_requests", finish_requests),
    ),
    snapshot=snapshot,
)


def _names_subjects(lake, uri: str) -> bool:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    body = lake.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return any(subject.encode() in body for subject in PARAMS["subject_ids"])

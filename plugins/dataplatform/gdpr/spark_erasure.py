"""The Spark side of GDPR erasure: the job spec and SparkJob for a dataset with ``engine: spark``, and
the check of the result JSON the job writes.

Hudi datasets run ``spark_jobs/gdpr_hudi_delete.py`` (on a transient EMR cluster), Iceberg datasets with
``engine: spark`` run ``spark_jobs/gdpr_iceberg_delete.py`` (on the configured Spark backend). The spec
and result formats, and their checks, live in ``spark_jobs.common.gdpr_spec`` (shipped with the jobs);
this module only feeds them from the config. Pure: imports neither Airflow nor Spark.

The spec holds the subject ids, so it goes under ``gdpr.work_uri`` (a private prefix), and the jobs'
Spark conf turns event logs off: a Spark event log records every query plan, literals included, and EMR
keeps it after the cluster is gone. The jobs themselves print and return no subject id.
"""

from __future__ import annotations

import re
from typing import Any

from dataplatform.config import GdprDataset
from dataplatform.spark import EMR_HUDI_JAR, SparkJob, SparkSizing
from spark_jobs.common import gdpr_spec, iceberg_sql
from spark_jobs.common.gdpr_spec import HUDI_JOB, ICEBERG_JOB, SPEC_VERSION

ENTRY = {"hudi": f"spark_jobs.{HUDI_JOB}", "iceberg": f"spark_jobs.{ICEBERG_JOB}"}
_RUN_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

# Query plans quote the subject predicate; an event log would keep them (see the module docstring).
PRIVACY_CONF = {"spark.eventLog.enabled": "false"}


def _job_for(dataset_key: str, dataset: GdprDataset) -> str:
    if dataset.format == "hudi":
        return HUDI_JOB
    if dataset.engine != "spark":
        raise ValueError(
            f"gdpr dataset {dataset_key!r} uses engine {dataset.engine!r}: only engine spark runs as a Spark job"
        )
    return ICEBERG_JOB


def sanitized_run_id(run_id: str) -> str:
    """``manual__2024-03-05T10:00:00+00:00`` -> ``manual__2024-03-05T10_00_00_00_00``: one path segment."""
    cleaned = _RUN_ID_UNSAFE.sub("_", run_id).strip("._")
    if not cleaned:
        raise ValueError(f"run id {run_id!r} has no letters or digits to name a folder with")
    return cleaned


def _run_folder(work_uri: str, dataset_key: str, run_id: str) -> str:
    return f"{work_uri.rstrip('/')}/{dataset_key}/{sanitized_run_id(run_id)}/"


def spec_uri(work_uri: str, dataset_key: str, run_id: str) -> str:
    """``<work_uri><dataset>/<sanitized run id>/spec.json``."""
    return _run_folder(work_uri, dataset_key, run_id) + "spec.json"


def result_uri(work_uri: str, dataset_key: str, run_id: str) -> str:
    """``<work_uri><dataset>/<sanitized run id>/result.json``."""
    return _run_folder(work_uri, dataset_key, run_id) + "result.json"


def build_spec(
    dataset_key: str,
    dataset: GdprDataset,
    subject_ids: list[str],
    run_id: str,
    work_uri: str,
    aws_endpoint_url: str | None,
    region: str,
) -> dict[str, Any]:
    """The job spec of one dataset for one run (checked: a bad subject id list fails here, naming the
    position of the bad id, before anything is written)."""
    job = _job_for(dataset_key, dataset)
    hudi = dataset.format == "hudi"
    spec = {
        "version": SPEC_VERSION,
        "job": job,
        "dataset": dataset_key,
        "format": dataset.format,
        "database": dataset.database,
        "table": dataset.table,
        "subject_columns": list(dataset.subject_columns),
        "partition_column": dataset.partition_column,
        # A copy, when it is a list; anything else is for check_spec to refuse.
        "subject_ids": list(subject_ids) if isinstance(subject_ids, list | tuple) else subject_ids,
        "result_uri": result_uri(work_uri, dataset_key, run_id),
        "aws_endpoint_url": aws_endpoint_url,
        "region": region,
        "catalog": None if hudi else iceberg_sql.CATALOG,
        "pinned_refs": None if hudi else dataset.pinned_refs,
        "location": dataset.location if hudi else None,
        "record_key": dataset.record_key if hudi else None,
        "precombine_field": dataset.precombine_field if hudi else None,
        "table_type": dataset.hudi_table_type if hudi else None,
    }
    return gdpr_spec.check_spec(spec)


def hudi_conf() -> dict[str, str]:
    """Hudi's Spark setup: its bundle where EMR installs it (the local backend's ``local_conf`` puts the
    locked bundle there instead), Kryo with Hudi's registrar, the session extension and catalog."""
    return {
        "spark.jars": EMR_HUDI_JAR,
        "spark.serializer": "org.apache.spark.serializer.KryoSerializer",
        "spark.kryo.registrator": "org.apache.spark.HoodieSparkKryoRegistrar",
        "spark.sql.extensions": "org.apache.spark.sql.hudi.HoodieSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.hudi.catalog.HoodieCatalog",
        "spark.sql.session.timeZone": "UTC",
        **PRIVACY_CONF,
    }


def iceberg_conf() -> dict[str, str]:
    """The Glue catalog with S3 deletes enabled (no delete tag): expiry must delete the files that held
    the rows, not tag them for a lifecycle rule to remove months later."""
    return {**iceberg_sql.catalog_conf(delete_tag=None, write_tag=None), **PRIVACY_CONF}


def spark_job(
    dataset_key: str,
    dataset: GdprDataset,
    spec_uri: str,
    *,
    sizing: SparkSizing | None = None,
) -> SparkJob:
    """``gdpr_<dataset>``: the dataset's job with ``--spec <spec_uri>``."""
    job = _job_for(dataset_key, dataset)
    conf = hudi_conf() if job == HUDI_JOB else iceberg_conf()
    return SparkJob(
        name=f"gdpr_{dataset_key}",
        entry=ENTRY[dataset.format],
        args=["--spec", spec_uri],
        conf=conf,
        sizing=sizing or SparkSizing(),
    )


def check_result(result: dict[str, Any], dataset_key: str, subjects: int | None = None) -> dict[str, Any]:
    """``result`` when it is a well-formed result of ``dataset_key``'s job whose verification passed (or
    whose status is ``pinned_refs``: nothing was changed, the refs are named). Raises ValueError naming
    what is wrong: a malformed field, another dataset, or the versions that still hold subject rows.
    ``subjects``: how many subject ids the spec had (one count per subject is expected)."""
    gdpr_spec.check_result_fields(result, subjects)
    if result["dataset"] != dataset_key:
        raise ValueError(f"result is for dataset {result['dataset']!r}, expected {dataset_key!r}")
    check = result["verification"]
    if result["status"] != gdpr_spec.PINNED_REFS and not check["passed"]:
        holding = {version: rows for version, rows in check["rows_found"].items() if rows}
        raise ValueError(
            f"{dataset_key}: verification failed: subject rows remain at {holding}"
            if holding
            else f"{dataset_key}: verification failed: nothing was read"
        )
    return result

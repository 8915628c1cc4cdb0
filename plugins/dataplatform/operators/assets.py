"""The lake's objects as Airflow Assets, named after the real objects and built from the config, so the
Assets view shows how data flows between the DAGs and which DAGs touch personal data.

An asset's URI names the object itself:

- an S3 prefix: ``s3://bucket/prefix`` (Airflow drops the trailing slash);
- a Glue (Hive-style) table: ``glue://database/table``;
- an Iceberg table in the Glue catalog: ``iceberg://database/table``;
- a Hudi table: ``hudi://database/table``;
- a DynamoDB table: ``dynamodb://table``.

Every asset carries ``extra={"personal_data": ...}``: true for the tables in ``gdpr.datasets`` and for the
GDPR pipeline's own stores that hold subject ids (the requests table and ``gdpr.work_uri``, where the job
specs are), false for the rest.

Tasks declare what they read as ``inlets`` and what they publish as ``outlets``. An outlet gets an asset
event when its task succeeds, and an event can schedule another DAG (``recon_stateful`` runs on
``recon_stateless_artifacts()``), so the outlet goes on the task that makes the data visible (a commit, a
ledger update), not on a Spark job whose output is published by the task after it. Run reports under
``reports_uri`` are not assets: every DAG writes them, and as one shared node they would link every DAG
to every other.
"""

from __future__ import annotations

from airflow.sdk import Asset

from dataplatform.config import Settings, settings


def _asset(uri: str, personal_data: bool = False) -> Asset:
    return Asset(uri=uri, name=uri.rstrip("/"), extra={"personal_data": personal_data})


def _is_gdpr_dataset(config: Settings, database: str, table: str) -> bool:
    return any((d.database, d.table) == (database, table) for d in config.gdpr.datasets.values())


def s3_prefix(uri: str, personal_data: bool = False) -> Asset:
    return _asset(uri, personal_data)


def glue_table(database: str, table: str, config: Settings | None = None) -> Asset:
    return _asset(f"glue://{database}/{table}", _is_gdpr_dataset(config or settings(), database, table))


def iceberg_table(database: str, table: str, config: Settings | None = None) -> Asset:
    return _asset(f"iceberg://{database}/{table}", _is_gdpr_dataset(config or settings(), database, table))


def hudi_table(database: str, table: str, config: Settings | None = None) -> Asset:
    return _asset(f"hudi://{database}/{table}", _is_gdpr_dataset(config or settings(), database, table))


def dynamodb_table(name: str, personal_data: bool = False) -> Asset:
    return _asset(f"dynamodb://{name}", personal_data)


# -- glue_partition_loader -------------------------------------------------------------------------------


def glue_table_locations() -> list[Asset]:
    """The S3 prefixes the configured Glue tables' partitions are listed from."""
    return [s3_prefix(t.location) for t in settings().glue.tables.values()]


def glue_tables() -> list[Asset]:
    return [glue_table(t.database, t.table) for t in settings().glue.tables.values()]


# -- reconciliation --------------------------------------------------------------------------------------


def recon_landing() -> Asset:
    return s3_prefix(settings().reconciliation.landing_uri)


def recon_stateless_artifacts() -> Asset:
    """Updated by every recon_stateless run that committed a group; recon_stateful is scheduled on it."""
    return s3_prefix(settings().reconciliation.work_uri + "stateless/")


def recon_prefetched_state() -> Asset:
    return s3_prefix(settings().reconciliation.work_uri + "state/")


def recon_stateful_artifacts() -> Asset:
    return s3_prefix(settings().reconciliation.work_uri + "stateful/")


def recon_ledger() -> Asset:
    return dynamodb_table(settings().reconciliation.ledger_table)


def recon_index() -> Asset:
    return dynamodb_table(settings().reconciliation.index_table)


# -- Iceberg maintenance ---------------------------------------------------------------------------------


def iceberg_tables(keys: list[str] | None = None) -> list[Asset]:
    """The tables of ``iceberg.tables`` (those of ``keys``, or all)."""
    tables = settings().iceberg.tables
    return [iceberg_table(tables[k].database, tables[k].table) for k in keys or tables]


def iceberg_maintenance_state() -> Asset:
    return s3_prefix(settings().iceberg.state_uri)


# -- GDPR erasure ----------------------------------------------------------------------------------------


def gdpr_dataset(key: str) -> Asset:
    dataset = settings().gdpr.datasets[key]
    table = hudi_table if dataset.format == "hudi" else iceberg_table
    return table(dataset.database, dataset.table)


def gdpr_datasets(keys: list[str] | None = None) -> list[Asset]:
    return [gdpr_dataset(key) for key in keys or settings().gdpr.datasets]


def gdpr_requests() -> Asset:
    # Holds each request's subject id, raw: the one place it is kept besides a running job's spec.
    return dynamodb_table(settings().gdpr.requests_table, personal_data=True)


def gdpr_audit() -> Asset:
    # Subjects are named by an HMAC only.
    return dynamodb_table(settings().gdpr.audit_table)


def gdpr_job_specs() -> Asset:
    return s3_prefix(settings().gdpr.work_uri, personal_data=True)


# -- pricing ---------------------------------------------------------------------------------------------


def workflow_launches() -> Asset:
    return dynamodb_table(settings().pricing.launches_table)


def price_cache() -> Asset:
    return s3_prefix(settings().pricing.price_cache_uri)


def spark_job_costs() -> Asset:
    return dynamodb_table(settings().pricing.job_costs_table)


# -- lake health -------------------------------------------------------------------------------------


def health_findings() -> Asset:
    """The open findings of ``lake_health`` (one item each; no subject id: requests are named by id)."""
    return dynamodb_table(settings().health.findings_table)


def lake_health_reads() -> list[Asset]:
    """What ``lake_health`` reads for its figures: every pipeline's state, none of it written."""
    return [
        recon_ledger(),
        gdpr_requests(),
        *iceberg_tables(),
        *glue_tables(),
        workflow_launches(),
    ]

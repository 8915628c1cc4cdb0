"""boto3 clients built from the Airflow AWS connection.

Credentials, region and endpoint (``extra.endpoint_url``: the moto server locally) all come from the
connection named in the config (``aws.conn_id``, default ``aws_default``), never from code. Every client
uses botocore's adaptive retry mode, which backs off on throttling (S3 503 SlowDown, Glue
ThrottlingException) and rate-limits the client itself.
"""

from __future__ import annotations

import random
from typing import Any

from botocore.config import Config

from dataplatform.config import settings

# Passed as ``botocore_config`` to the provider's operators too, so they retry the same way.
# The connection pool is sized for the thread pools that share one client (Iceberg tagging: 32 workers);
# botocore's default of 10 would make the others wait for a connection.
RETRY_CONFIG: dict[str, Any] = {
    "retries": {"mode": "adaptive", "max_attempts": 10},
    "max_pool_connections": 64,
}


def retry_config() -> Config:
    return Config(**RETRY_CONFIG)


# Glue answers ConcurrentModificationException when another writer changed the catalog object meanwhile;
# botocore's retry modes leave it to the caller (it is neither a throttle nor transient). Every Glue call
# made through these clients is safe to send again after it (the call was not applied; partition
# creation is idempotent, table updates are conditional), so they retry it like a throttle, with full
# jitter, within the same attempt budget. Found by `make chaos` (glue_concurrent_modification failed
# load_partitions' try).
_RETRIED_GLUE_CODES = {"ConcurrentModificationException"}


def retry_glue_conflicts(attempts: int, response: Any = None, **_: Any) -> float | None:
    """A ``needs-retry`` handler: the delay before resending a Glue call refused for a concurrent
    modification, None otherwise (botocore's own retry handler decides then)."""
    if response is None or attempts >= RETRY_CONFIG["retries"]["max_attempts"]:
        return None
    if response[1].get("Error", {}).get("Code") not in _RETRIED_GLUE_CODES:
        return None
    return random.uniform(0, min(5.0, 0.1 * 2**attempts))


def client(service: str, conn_id: str | None = None, region: str | None = None):
    """A boto3 client for ``service`` from the Airflow connection (adaptive retries)."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    hook = AwsBaseHook(
        aws_conn_id=conn_id or settings().aws.conn_id,
        client_type=service,
        region_name=region or settings().aws.region,
        config=retry_config(),
    )
    client = hook.get_conn()
    if service == "glue":
        client.meta.events.register_first("needs-retry.glue", retry_glue_conflicts)
    return client


def client_in(service: str, region: str):
    """``client`` with a positional region: the (service, region) factory pricing takes."""
    return client(service, region=region)


def endpoint_url(conn_id: str | None = None) -> str | None:
    """The connection's ``endpoint_url`` (the moto server locally; ``None`` in AWS).

    Spark jobs that call AWS from their executors get it in their job spec: they cannot read Airflow
    connections themselves."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    return AwsBaseHook(aws_conn_id=conn_id or settings().aws.conn_id).conn_config.endpoint_url


def explicit_credentials(conn_id: str | None = None) -> tuple[str | None, str | None, str | None]:
    """(access key, secret key, session token) when the connection holds them (the moto connection does),
    else ``(None, None, None)``: libraries that are not boto3 (pyiceberg's S3 FileIO) then use the
    default credential chain, the MWAA execution role in AWS."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    conn = AwsBaseHook(aws_conn_id=conn_id or settings().aws.conn_id).conn_config
    if not conn.aws_access_key_id:
        return None, None, None
    return conn.aws_access_key_id, conn.aws_secret_access_key, conn.aws_session_token

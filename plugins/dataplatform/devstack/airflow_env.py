"""Environment variables that make a local Airflow (SQLite, or PostgreSQL given its URL) use this repository
and the moto server."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from dataplatform.config import REPO_ROOT
from dataplatform.devstack.moto_server import connection_uri_json

# On PostgreSQL the LocalExecutor runs task processes side by side. A laptop's worth of them: 8 at once
# (each a Python process, some a Spark JVM), 4 of one DAG (the mapped tasks of a run, or overlapping runs),
# as an MWAA environment's worker runs a handful. Airflow's defaults (32 and 16) are for a server.
POSTGRES_PARALLELISM = {
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "AIRFLOW__CORE__PARALLELISM": "8",
    "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
}


def airflow_env(
    airflow_home: Path, moto_url: str, base: dict[str, str] | None = None, database_url: str | None = None
) -> dict[str, str]:
    """``database_url``: a PostgreSQL URL (``dataplatform.devstack.postgres``); None for SQLite in the home."""
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            # SQLite lets one writer in at a time; the CLI beside a running scheduler (`make airflow
            # ARGS="backfill create ..."`) waits up to 60 s for its turn instead of Python's default 5 s,
            # after which it failed with "database is locked".
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url
            or f"sqlite:///{airflow_home}/airflow.db?timeout=60",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            # The connection, endpoint included, lives in the environment: nothing in the repo points at moto.
            "AIRFLOW_CONN_AWS_DEFAULT": connection_uri_json(moto_url),
            # Anything that bypasses the connection must not reach a real account from a laptop.
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "DATAPLATFORM_ENV": env.get("DATAPLATFORM_ENV", "local"),
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "plugins"), str(REPO_ROOT)]),
        }
    )
    if database_url:
        env.update(POSTGRES_PARALLELISM)
    # The GDPR HMAC key (gdpr.hmac_conn_id): a throwaway key per local environment. In AWS it lives in the
    # secrets backend.
    env.setdefault("AIRFLOW_CONN_GDPR_HMAC", gdpr_hmac_connection())
    return env


def gdpr_hmac_connection(key: str | None = None) -> str:
    return json.dumps({"conn_type": "generic", "password": key or secrets.token_hex(32)})


def query_metadata_db(env: dict[str, str], sql: str, **params) -> list[tuple]:
    """Rows of ``sql`` (named ``:params``) from the environment's metadata database, SQLite or PostgreSQL,
    read with SQLAlchemy (an Airflow dependency) outside any Airflow process."""
    from sqlalchemy import create_engine, text

    engine = create_engine(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql), params)]
    finally:
        engine.dispose()

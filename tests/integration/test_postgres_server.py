"""A real PostgreSQL server from ``dataplatform.devstack.postgres``: Airflow migrates its metadata onto it
(``airflow db migrate`` with the URL the stack gives Airflow), a restart on the same cluster finds the
metadata again, and stopping ends the server (every process of it) and frees its port."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import psycopg2
import pytest

from dataplatform.devstack.postgres import PostgresError, PostgresServer, temporary_postgres
from dataplatform.devstack.server_process import port_free

pytestmark = pytest.mark.integration

AIRFLOW_TABLES = {"alembic_version", "dag", "dag_run", "task_instance", "serialized_dag", "backfill"}


def tables(url: str) -> set[str]:
    """The tables in the airflow database's public schema, read over TCP with the URL's login."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
            return {row[0] for row in rows}
    finally:
        engine.dispose()


def migrate(url: str) -> None:
    env = {**os.environ, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url}
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def owners(processes: list[psutil.Process]) -> set[str]:
    """The users the server's processes run as. A background worker may end between the listing and the
    read (a startup process, a parallel worker): it is skipped; the postmaster (first) must be alive."""
    found = {processes[0].username()}
    for process in processes[1:]:
        try:
            found.add(process.username())
        except psutil.NoSuchProcess:
            continue
    return found


def test_airflow_migrates_onto_the_server_and_stopping_leaves_nothing(capsys):
    with temporary_postgres() as server:
        assert server.running and server.port
        assert server.describe().startswith(f"postgres {server.version} on 127.0.0.1:{server.port}, cluster ")
        cluster = server.directory
        processes = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
        assert len(processes) > 1, "the postmaster and its background workers"
        if os.geteuid() == 0:
            assert owners(processes) == {"postgres"}, "never root: PostgreSQL refuses it"
        migrate(server.url)
        assert tables(server.url) >= AIRFLOW_TABLES

        # A restart on the same cluster: the metadata is still there, under a new password.
        old_url, port = server.url, server.port
        server.stop()
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)
        assert port_free(port)
        server.start()
        assert server.url != old_url
        assert tables(server.url) >= AIRFLOW_TABLES
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            psycopg2.connect(
                host="127.0.0.1", port=server.port, user="airflow", password="wrong", dbname="airflow"
            )
        pid, port = server.pid, server.port
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert port_free(port)
    assert not cluster.exists(), "temporary_postgres deletes its cluster"


def test_a_cluster_of_another_major_version_is_refused_with_what_to_do():
    directory = Path(tempfile.mkdtemp())
    directory.chmod(0o711)  # passable for the postgres OS user (root runs the server as that user)
    cluster = directory / "postgres"
    cluster.mkdir()
    (cluster / "PG_VERSION").write_text("9\n")
    server = PostgresServer(cluster)
    try:
        with pytest.raises(PostgresError, match=r"is PostgreSQL 9, the server is \d+: delete the directory"):
            server.start()
        assert not server.running
        assert sorted(p.name for p in cluster.iterdir()) == ["PG_VERSION"], "nothing written into it"
    finally:
        server.stop()
        shutil.rmtree(directory)

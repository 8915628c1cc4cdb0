"""The pure parts of the local PostgreSQL server (``dataplatform.devstack.postgres``): where the binaries
are looked for, the commands that create and serve the cluster, the database URL, where a cluster can live
for the postgres OS user, and the Airflow settings that go with it."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from dataplatform.devstack import postgres
from dataplatform.devstack.airflow_env import airflow_env
from dataplatform.devstack.postgres import (
    OsUser,
    PostgresError,
    blocking_directory,
    candidate_bindirs,
    cluster_location,
    initdb_command,
    is_server_bindir,
    major_version,
    server_command,
    socket_directory,
    sqlalchemy_url,
)

pytestmark = pytest.mark.unit

STRANGER = OsUser("postgres", uid=424242, gid=424242)  # owns nothing here


def fake_bindir(path: Path, binaries=("initdb", "postgres")) -> Path:
    path.mkdir(parents=True)
    for name in binaries:
        (path / name).write_text("#!/bin/sh\n")
        (path / name).chmod(0o755)
    return path


def test_pg_config_comes_first_then_debian_versions_newest_first(tmp_path):
    root = tmp_path / "lib" / "postgresql"
    for version in ("9", "13", "15", "not-a-version"):
        (root / version / "bin").mkdir(parents=True)
    found = candidate_bindirs("/opt/pg/bin", roots=[root, tmp_path / "absent"])
    assert found == [Path("/opt/pg/bin"), root / "15" / "bin", root / "13" / "bin", root / "9" / "bin"]
    assert candidate_bindirs(None, roots=[root])[0] == root / "15" / "bin"


def test_a_bindir_counts_only_with_both_server_binaries_executable(tmp_path):
    assert is_server_bindir(fake_bindir(tmp_path / "server"))
    assert not is_server_bindir(fake_bindir(tmp_path / "client-only", binaries=("psql", "pg_dump")))
    half = fake_bindir(tmp_path / "not-executable")
    (half / "postgres").chmod(0o644)
    assert not is_server_bindir(half)


def test_find_bindir_skips_a_pg_config_without_the_server(tmp_path, monkeypatch):
    root = tmp_path / "postgresql"
    fake_bindir(root / "15" / "bin")
    client = fake_bindir(tmp_path / "client", binaries=("psql",))
    monkeypatch.setattr(postgres, "pg_config_bindir", lambda: str(client))
    assert postgres.find_bindir(roots=[root]) == root / "15" / "bin"


def test_without_binaries_and_root_the_error_names_the_install_command(monkeypatch):
    monkeypatch.setattr(postgres, "find_bindir", lambda: None)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(postgres, "install_server", lambda: pytest.fail("installs only as root"))
    with pytest.raises(PostgresError, match=r"apt-get install -y postgresql"):
        postgres.server_bindir()


def test_as_root_without_binaries_it_installs_them(monkeypatch, tmp_path):
    bindir = fake_bindir(tmp_path / "bin")
    installed = []
    monkeypatch.setattr(postgres, "find_bindir", lambda: bindir if installed else None)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(postgres, "install_server", lambda: installed.append(True))
    assert postgres.server_bindir() == bindir
    assert installed == [True]


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n", "15"),
        ("postgres (PostgreSQL) 17.2\n", "17"),
        ("postgres (PostgreSQL) 18beta1\n", "18"),
    ],
)
def test_major_version(output, major):
    assert major_version(output) == major


def test_an_unreadable_version_is_an_error_not_a_guess():
    with pytest.raises(PostgresError, match="cannot read the PostgreSQL version"):
        major_version("something else 15.1")


def test_initdb_makes_passwords_mandatory_over_tcp():
    command = initdb_command(Path("/usr/lib/postgresql/15/bin"), Path("/data/pg"))
    assert command[0] == "/usr/lib/postgresql/15/bin/initdb"
    assert command[command.index("--pgdata") + 1] == "/data/pg"
    assert command[command.index("--username") + 1] == "postgres"
    assert "--auth-host=scram-sha-256" in command and "--auth-local=trust" in command


def test_the_server_listens_on_loopback_only_with_its_socket_in_the_cluster():
    command = server_command(Path("/pg/bin"), Path("/data/pg"), 54321)
    assert command[:3] == ["/pg/bin/postgres", "-D", "/data/pg"]
    settings = dict(value.split("=", 1) for flag, value in zip(command[3::2], command[4::2], strict=True))
    assert {flag for flag in command[3::2]} == {"-c"}
    assert settings["listen_addresses"] == "127.0.0.1"
    assert settings["port"] == "54321"
    assert settings["unix_socket_directories"] == "/data/pg"


def test_a_cluster_too_deep_for_a_unix_socket_gets_a_short_socket_directory_of_its_own():
    deep = Path(
        "/work/main/.local/chaos/rate0.05-seeds1_2-postgres-glue_partition_loader/faults-seed1/postgres"
    )
    command = server_command(Path("/pg/bin"), deep, 45501)
    sockets = command[command.index("-c", 3) :][1::2]
    (directory,) = [s.split("=", 1)[1] for s in sockets if s.startswith("unix_socket_directories=")]
    assert len(f"{directory}/.s.PGSQL.45501".encode()) <= 107
    assert directory != str(deep) and directory == str(socket_directory(deep))
    assert socket_directory(deep.parent.parent) != directory  # one per cluster


def test_the_url_is_psycopg2_and_quotes_the_password():
    url = sqlalchemy_url("p@ss:w/rd%", 54321)
    assert url.startswith("postgresql+psycopg2://airflow:")
    parsed = make_url(url)
    assert (parsed.drivername, parsed.username, parsed.password) == (
        "postgresql+psycopg2",
        "airflow",
        "p@ss:w/rd%",
    )
    assert (parsed.host, parsed.port, parsed.database) == ("127.0.0.1", 54321, "airflow")


@pytest.fixture
def open_dir():
    """A directory every user can pass through (pytest's tmp_path sits in a 0700 one)."""
    directory = Path(tempfile.mkdtemp())
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def test_a_directory_without_search_permission_blocks_the_server_user(open_dir):
    closed = open_dir / "closed"
    closed.mkdir(mode=0o700)
    wanted = closed / "home" / "postgres"
    assert blocking_directory(open_dir / "x", STRANGER) is None
    assert blocking_directory(wanted, STRANGER) == closed
    closed.chmod(0o711)
    assert blocking_directory(wanted, STRANGER) is None
    closed.chmod(0o700)
    owner = OsUser("me", uid=closed.stat().st_uid, gid=424242)
    assert blocking_directory(wanted, owner) is None, "the owner passes its own 0700 directory"


def test_an_unreachable_cluster_moves_to_a_stable_temporary_directory(tmp_path):
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    wanted = closed / "postgres"
    assert cluster_location(wanted, None) == wanted, "not root: the cluster stays where it is asked for"
    moved = cluster_location(wanted, STRANGER)
    assert moved != wanted and moved.name.startswith("dataplatform-postgres-")
    assert cluster_location(wanted, STRANGER) == moved, "the next start finds the same cluster"
    assert cluster_location(closed / "other", STRANGER) != moved


def test_airflow_on_postgres_runs_tasks_in_parallel_and_sqlite_stays_the_default(tmp_path):
    url = sqlalchemy_url("secret", 5432)
    on_postgres = airflow_env(tmp_path, "http://127.0.0.1:9", base={}, database_url=url)
    assert on_postgres["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == url
    assert on_postgres["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert int(on_postgres["AIRFLOW__CORE__PARALLELISM"]) >= 2
    assert (
        2
        <= int(on_postgres["AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG"])
        <= int(on_postgres["AIRFLOW__CORE__PARALLELISM"])
    )
    on_sqlite = airflow_env(tmp_path, "http://127.0.0.1:9", base={})
    assert on_sqlite["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith(f"sqlite:///{tmp_path}/airflow.db")
    assert "AIRFLOW__CORE__PARALLELISM" not in on_sqlite

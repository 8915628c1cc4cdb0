"""A throw-away PostgreSQL server for the local Airflow metadata database (`make up DB=postgres`, e2e tests).

SQLite lets one writer in at a time; on PostgreSQL, as in MWAA and docker-compose.yaml, the scheduler,
the api-server and the LocalExecutor's task processes really work side by side.

    with PostgresServer(home / "postgres") as postgres:
        print(postgres.describe())  # postgres 15 on 127.0.0.1:PORT, cluster .local/airflow/postgres
        env = airflow_env(home, moto.url, database_url=postgres.url)

* Binaries: ``pg_config --bindir``, else the newest ``/usr/lib/postgresql/<version>/bin`` (Debian's
  layout). None there: as root the stack installs them (``apt-get install -y postgresql``), otherwise
  it stops with that command in the message.
* Cluster: ``initdb`` into the given directory on the first start, reused on the next ones (the Airflow
  metadata survives a restart, as the SQLite file does); delete the directory to start afresh.
* Server: on a free loopback port, its unix socket inside the cluster directory; a database and login
  role ``airflow`` with a password made anew on every start. ``stop()`` ends the server it started, and
  nothing else.
* Root: initdb and postgres refuse to run as root, so they run as the ``postgres`` OS user (created by
  the Debian package), which owns the cluster directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from dataplatform.devstack.moto_server import free_port
from dataplatform.devstack.server_process import ServerProcess

INSTALL_COMMAND = ("apt-get", "install", "-y", "postgresql")
DEBIAN_ROOT = Path("/usr/lib/postgresql")
SERVER_BINARIES = ("initdb", "postgres")
SUPERUSER = "postgres"  # the cluster's superuser role, and the OS user the server runs as under root
DATABASE = ROLE = "airflow"
HOST = "127.0.0.1"
BIND_FAILED = re.compile(r"could not bind|address already in use|could not create any TCP/IP sockets", re.I)

# The settings of a throw-away development cluster: no fsync (a crash of the machine may lose or corrupt
# it; it holds nothing that `make up` cannot recreate), and no unix socket outside the cluster directory.
SERVER_SETTINGS = {
    "listen_addresses": HOST,
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


class PostgresError(RuntimeError):
    """The server cannot be found, installed, initialised or started (the message says what to do)."""


@dataclass(frozen=True)
class OsUser:
    """Who initdb and postgres run as: ``None`` in ``PostgresServer.user`` means the current user."""

    name: str
    uid: int
    gid: int


# -- the binaries -------------------------------------------------------------------------------------


def candidate_bindirs(pg_config_bindir: str | None, roots: Iterable[Path] = (DEBIAN_ROOT,)) -> list[Path]:
    """Where to look for initdb and postgres, in order: pg_config's bindir (it may be the client's only,
    e.g. libpq-dev's pg_config), then ``<root>/<version>/bin``, newest major version first."""
    found = [Path(pg_config_bindir)] if pg_config_bindir else []
    for root in roots:
        versions = [p for p in root.glob("*") if p.name.isdigit()] if root.is_dir() else []
        found += [p / "bin" for p in sorted(versions, key=lambda p: int(p.name), reverse=True)]
    return found


def is_server_bindir(path: Path) -> bool:
    return all(os.access(path / name, os.X_OK) and (path / name).is_file() for name in SERVER_BINARIES)


def find_bindir(roots: Iterable[Path] = (DEBIAN_ROOT,)) -> Path | None:
    """The first directory holding the server binaries (initdb, postgres), or None."""
    for path in candidate_bindirs(pg_config_bindir(), roots):
        if is_server_bindir(path):
            return path
    return None


def pg_config_bindir() -> str | None:
    pg_config = shutil.which("pg_config")
    if not pg_config:
        return None
    result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=30)
    return result.stdout.strip() or None if result.returncode == 0 else None


def server_bindir() -> Path:
    """The server binaries' directory; installs them first (as root) when there are none."""
    found = find_bindir()
    if found:
        return found
    command = " ".join(INSTALL_COMMAND)
    if os.geteuid() != 0:
        raise PostgresError(
            f"no PostgreSQL server (initdb, postgres) in `pg_config --bindir` or {DEBIAN_ROOT}/*/bin: "
            f"install it with `sudo {command}` (Debian / Ubuntu), or run with the default SQLite database"
        )
    install_server()
    found = find_bindir()
    if not found:
        raise PostgresError(f"`{command}` ran, but initdb and postgres are still not found")
    return found


def install_server() -> None:
    """``apt-get install -y postgresql``, after an ``apt-get update`` if the package lists are stale."""
    print(f"PostgreSQL is not installed: {' '.join(INSTALL_COMMAND)} ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(INSTALL_COMMAND, env=env, capture_output=True, timeout=900).returncode == 0:
        return
    subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=900)
    result = subprocess.run(INSTALL_COMMAND, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise PostgresError(f"`{' '.join(INSTALL_COMMAND)}` failed:\n{result.stdout[-2000:]}{result.stderr}")


def major_version(version_output: str) -> str:
    """``postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)`` -> ``15``."""
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", version_output)
    if not match:
        raise PostgresError(f"cannot read the PostgreSQL version from {version_output!r}")
    return match.group(1)


def server_user() -> OsUser | None:
    """None when not root (the server runs as us); else the ``postgres`` OS user."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SUPERUSER)
    except KeyError:
        raise PostgresError(
            f"running as root, but there is no `{SUPERUSER}` OS user to run the server as (PostgreSQL refuses "
            f"root): `{' '.join(INSTALL_COMMAND)}` creates it"
        ) from None
    return OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


# -- commands and URL ---------------------------------------------------------------------------------


def initdb_command(bindir: Path, data_dir: Path) -> list[str]:
    """A cluster whose superuser logs in without password only over the unix socket (inside the
    cluster directory, reachable by its owner alone), and every TCP login with a SCRAM password."""
    return [
        str(bindir / "initdb"),
        "--pgdata",
        str(data_dir),
        "--username",
        SUPERUSER,
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
        "--encoding=UTF8",
        "--no-locale",
        "--no-sync",
    ]


# A unix socket's path may hold 107 bytes (sun_path); the socket file is ``<directory>/.s.PGSQL.<port>``.
SOCKET_PATH_MAX = 107


def socket_directory(data_dir: Path) -> Path:
    """Where the server's unix socket goes: the cluster directory (reachable by its owner alone), or,
    when that path is too long for a socket (a cluster deep in a work tree), a short directory of its own
    in the temporary directory, named after the cluster."""
    if len(f"{data_dir.absolute()}/.s.PGSQL.65535".encode()) <= SOCKET_PATH_MAX:
        return data_dir
    digest = hashlib.sha256(str(data_dir.absolute()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"pgsock-{digest}"


def server_command(bindir: Path, data_dir: Path, port: int) -> list[str]:
    sockets = socket_directory(data_dir)
    settings = {**SERVER_SETTINGS, "port": str(port), "unix_socket_directories": str(sockets)}
    command = [str(bindir / "postgres"), "-D", str(data_dir)]
    for name, value in settings.items():
        command += ["-c", f"{name}={value}"]
    return command


def sqlalchemy_url(
    password: str, port: int, host: str = HOST, user: str = ROLE, database: str = DATABASE
) -> str:
    """The ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` value (Airflow derives the asyncpg URL from it)."""
    return f"postgresql+psycopg2://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/{database}"


# -- where the cluster can live -----------------------------------------------------------------------


def blocking_directory(path: Path, user: OsUser) -> Path | None:
    """The first existing ancestor of ``path`` that ``user`` may not pass through (no search permission
    for it), or None. A pytest tmp dir (0700, root's) is one: the postgres user cannot reach inside."""
    for directory in reversed(path.absolute().parents):
        try:
            info = directory.stat()
        except FileNotFoundError:
            return None
        if info.st_uid == user.uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid == user.gid:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return directory
    return None


def cluster_location(wanted: Path, user: OsUser | None) -> Path:
    """``wanted``, unless the server's OS user cannot reach it: then a directory of its own in the
    temporary directory, named after ``wanted`` (so that the next start finds the same cluster)."""
    if user is None or blocking_directory(wanted, user) is None:
        return wanted
    digest = hashlib.sha256(str(wanted.absolute()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"dataplatform-postgres-{digest}"


# -- the server ---------------------------------------------------------------------------------------


class PostgresServer(ServerProcess):
    """``start()`` (or ``with``): the cluster in ``directory`` served on a free loopback port; ``url``
    is the Airflow database URL, ``port`` and ``version`` what it runs on; ``stop()`` ends it."""

    def __init__(self, directory: Path, *, log_path: Path | None = None):
        self.wanted = Path(directory)
        self.directory = self.wanted
        self.log_path = Path(log_path) if log_path else self.wanted.with_name(self.wanted.name + ".log")
        self.port: int | None = None
        self.version = ""
        self.url = ""
        self.user: OsUser | None = None
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def describe(self) -> str:
        shown = (
            os.path.relpath(self.directory) if self.directory.is_relative_to(Path.cwd()) else self.directory
        )
        return f"postgres {self.version} on {HOST}:{self.port}, cluster {shown}"

    def start(self, timeout: float = 120.0, attempts: int = 3) -> PostgresServer:
        if self.running:
            return self
        bindir = server_bindir()
        self.version = major_version(self._run([str(bindir / "postgres"), "--version"], as_server=False))
        self.user = server_user()
        self.directory = cluster_location(self.wanted, self.user)
        self._init_cluster(bindir)
        self._make_socket_directory()
        # free_port() releases the port before postgres binds it: another process may take it in between.
        for attempt in range(1, attempts + 1):
            self.port = free_port()
            if self._start_once(bindir, timeout):
                break
            if attempt == attempts:
                raise PostgresError(
                    f"postgres could not bind a port in {attempts} attempts:\n{self.log_tail()}"
                )
        self.url = sqlalchemy_url(self._create_airflow_database(), self.port)
        return self

    def stop(self, grace: float = 30.0) -> None:
        """Fast shutdown (SIGINT: open transactions are rolled back, the server checkpoints and exits),
        SIGKILL to its process group after ``grace`` seconds. Only the server this object started."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        # Backends are the postmaster's children in its process group; they exit with it, but make sure.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        sockets = socket_directory(self.directory)
        if sockets != self.directory:
            shutil.rmtree(sockets, ignore_errors=True)

    # -- steps ---------------------------------------------------------------------------------------

    def _init_cluster(self, bindir: Path) -> None:
        version_file = self.directory / "PG_VERSION"
        if version_file.exists():  # root may read the postgres user's 0700 directory
            found = version_file.read_text().strip()
            if found != self.version:
                raise PostgresError(
                    f"the cluster in {self.directory} is PostgreSQL {found}, the server is {self.version}: "
                    "delete the directory to start with a new one"
                )
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            os.chown(self.directory, self.user.uid, self.user.gid)
        self.directory.chmod(0o700)
        self._run(initdb_command(bindir, self.directory))

    def _make_socket_directory(self) -> None:
        """The socket's own short directory when the cluster's path is too long: the server's OS user's
        alone (0700), as the cluster directory is."""
        sockets = socket_directory(self.directory)
        if sockets == self.directory:
            return
        sockets.mkdir(mode=0o700, exist_ok=True)
        if self.user is not None:
            os.chown(sockets, self.user.uid, self.user.gid)

    def _start_once(self, bindir: Path, timeout: float) -> bool:
        """Start the server and wait until it answers; False if the port was taken."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                server_command(bindir, self.directory, self.port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                start_new_session=True,  # its own process group: stop() signals the server and its backends
                **self._as_server(),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                if BIND_FAILED.search(self._log_since(offset)):
                    self._process = None
                    return False
                raise PostgresError(f"postgres exited with {self._process.returncode}:\n{self.log_tail()}")
            try:
                self._superuser_connection().close()
                return True
            except Exception:  # psycopg2.OperationalError until the server accepts connections
                time.sleep(0.2)
        self.stop()
        raise PostgresError(f"postgres did not accept connections within {timeout:.0f}s:\n{self.log_tail()}")

    def _create_airflow_database(self) -> str:
        """The ``airflow`` role (with a new password) and database; returns the password."""
        password = secrets.token_urlsafe(24)
        connection = self._superuser_connection()
        connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,))
                verb = "ALTER" if cursor.fetchone() else "CREATE"
                cursor.execute(f"{verb} ROLE {ROLE} LOGIN PASSWORD %s", (password,))
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
                if not cursor.fetchone():
                    cursor.execute(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
        finally:
            connection.close()
        return password

    def _superuser_connection(self):
        import psycopg2

        return psycopg2.connect(
            host=str(socket_directory(self.directory)),
            port=self.port,
            user=SUPERUSER,
            dbname="postgres",
            connect_timeout=5,
        )

    # -- as the server's OS user ---------------------------------------------------------------------

    def _as_server(self) -> dict:
        """Popen arguments that run a command as the server's OS user (nothing when that is us)."""
        if self.user is None:
            return {}
        return {"user": self.user.uid, "group": self.user.gid, "extra_groups": [], "umask": 0o077}

    def _run(self, command: list[str], as_server: bool = True) -> str:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=300,
            cwd="/",
            **(self._as_server() if as_server else {}),
        )
        if result.returncode != 0:
            raise PostgresError(
                f"`{' '.join(command)}` failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )
        return result.stdout

    def _log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")


@contextlib.contextmanager
def temporary_postgres(prefix: str = "dataplatform-postgres-") -> Iterator[PostgresServer]:
    """A server on a new cluster in a temporary directory, deleted with it afterwards (tests, chaos runs).

    The directory is made passable (0711) for the postgres OS user that runs the server under root."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    directory.chmod(0o711)
    try:
        with PostgresServer(directory / "postgres") as server:
            yield server
    finally:
        shutil.rmtree(directory, ignore_errors=True)

"""``airflow standalone`` on a free loopback port, driven over the REST API: for `make up` and e2e tests.

``airflow standalone`` runs the scheduler, DAG processor, triggerer and api-server as children of one
parent; killing the parent alone leaves them running. So it starts in its own session and process group,
and ``stop()`` ends the whole group (and any task process that moved to a group of its own, by session).

    airflow = StandaloneAirflow(home, airflow_env(home, moto.url)).start()
    airflow.wait_healthy()
    print(airflow.url, airflow.username, airflow.password)
    airflow.api("PATCH", "/dags/my_dag", json={"is_paused": False})
    airflow.stop()
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx

from dataplatform.config import settings
from dataplatform.devstack.moto_server import free_port
from dataplatform.devstack.server_process import ServerProcess

# Defaults for a local stack; the env passed in overrides them (port, base URL and AIRFLOW_HOME are always
# set by the class).
DEFAULT_ENV: dict[str, str] = {
    # Serve on loopback only: a dev stack with a generated password is not for the network.
    "AIRFLOW__API__HOST": "127.0.0.1",
    # Look for new or deleted DAG files every 10 s instead of every 5 minutes, and re-parse a changed
    # file after 10 s instead of 30 s, so an edited DAG shows up while you look at the UI. A fresh home
    # parses every file at startup either way.
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
    # A task reaches the api-server's execution API with a 5 s timeout by default; an api-server on SQLite
    # on a busy laptop can take longer, and the executor then fails the task before it starts.
    "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
}

# What wait_healthy() waits for: the triggerer too, since deferrable tasks stall without it.
HEALTH_COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")

PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"


class AirflowApiError(RuntimeError):
    """An HTTP error from the Airflow API; ``status_code`` and ``body`` (parsed JSON when possible)."""

    def __init__(self, method: str, url: str, status_code: int, body: Any):
        super().__init__(f"{method} {url} -> HTTP {status_code}: {body}")
        self.status_code = status_code
        self.body = body


class PortInUseError(RuntimeError):
    """A component could not bind its port (taken between picking it and Airflow binding it)."""


class StandaloneAirflow(ServerProcess):
    """One ``airflow standalone`` (SQLite, LocalExecutor) with its own AIRFLOW_HOME and port.

    ``url`` is the UI and API root; ``username`` / ``password`` the generated admin login (``password``
    is read from the home once Airflow has written it: after ``wait_healthy()``).
    """

    username = "admin"

    def __init__(
        self,
        home: Path | str,
        env: Mapping[str, str] | None = None,
        *,
        port: int | None = None,
        log_path: Path | None = None,
    ):
        self.home = Path(home)
        self.log_path = log_path or self.home / "standalone.log"
        self.env = {**DEFAULT_ENV, **(os.environ if env is None else env)}
        self.env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                # standalone starts its components as `airflow <component>` from PATH: use this
                # interpreter's (the virtualenv's) `airflow`, even when the venv is not activated.
                "PATH": os.pathsep.join([str(Path(sys.executable).parent), self.env.get("PATH", os.defpath)]),
            }
        )
        self._use_ports(port or free_port())
        self._process: subprocess.Popen | None = None
        self._log_offset = 0
        self._password: str | None = None
        self._token: str | None = None
        self._client = httpx.Client(timeout=30.0)

    def _use_ports(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env.update(
            {
                # The api-server listens on [api] port. [api] base_url is also where task workers reach
                # the execution API: left unset it defaults to http://localhost:8080, i.e. to whatever
                # other Airflow runs on this machine.
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__API__BASE_URL": self.url,
                # The scheduler and triggerer serve task logs on fixed ports (8793, 8794) by default.
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            }
        )

    # -- lifecycle -------------------------------------------------------------------------------------

    def start_and_wait(self, timeout: float = 240.0, attempts: int = 3) -> StandaloneAirflow:
        """``start()`` and ``wait_healthy()``, then the config's pools created (the database is migrated
        by then; DAGs start paused, so nothing was scheduled without them); on a port taken in between
        (free_port() releases the port it found long before the api-server binds it), start again on new
        ports."""
        for attempt in range(1, attempts + 1):
            self.start()
            try:
                self.wait_healthy(timeout)
                self.create_pools()
                return self
            except PortInUseError:
                self.stop()
                if attempt == attempts:
                    raise
                self._use_ports(free_port())
        return self

    def create_pools(self, attempts: int = 6) -> dict:
        """Create the config's pools (``dataplatform.pools``), or overwrite (resize) those that exist, with
        the request MWAA gets too (``PATCH /pools``, README *Concurrency limits*): the scheduler never
        queues a task whose pool does not exist. On SQLite the api-server may answer 503 "database is
        locked" while the scheduler writes: the request is idempotent, so it is sent again."""
        from dataplatform.pools import pool_bulk_request

        for attempt in range(1, attempts + 1):
            try:
                result = self.api("PATCH", "/pools", json=pool_bulk_request(settings().pools))
                break
            except AirflowApiError as exc:
                if exc.status_code != 503 or attempt == attempts:
                    raise
                time.sleep(5)
        if result["create"]["errors"]:
            raise RuntimeError(f"pools not created: {result['create']['errors']}")
        return result["create"]

    def start(self) -> StandaloneAirflow:
        if self.running:
            return self
        self.home.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "airflow", "standalone"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.home,
                start_new_session=True,
            )
        return self

    def health(self) -> dict:
        """GET /api/v2/monitor/health (no login needed)."""
        response = self._client.get(f"{self.url}/api/v2/monitor/health", timeout=5.0)
        response.raise_for_status()
        return response.json()

    def wait_healthy(self, timeout: float = 180.0, components: Iterable[str] = HEALTH_COMPONENTS) -> dict:
        """Poll the health endpoint until every component in ``components`` reports healthy.

        A component the server does not report (``dag_processor`` is ``null`` when it runs inside the
        scheduler) is not waited for. Raises with the log's tail if Airflow exits or the time runs out.
        """
        if self._process is None:
            raise RuntimeError("StandaloneAirflow.wait_healthy() before start()")
        components = tuple(components)
        deadline = time.monotonic() + timeout
        last: Any = "no answer yet"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"airflow standalone exited with {self._process.returncode}; log {self.log_path}:\n"
                    + self.log_tail()
                )
            if self._bind_failed():
                raise PortInUseError(
                    f"a port of Airflow on {self.url} was taken; log {self.log_path}:\n" + self.log_tail()
                )
            try:
                last = self.health()
            except (httpx.HTTPError, ValueError) as exc:
                last = repr(exc)
            else:
                unhealthy = [
                    name
                    for name in components
                    if last.get(name) is not None and (last[name] or {}).get("status") != "healthy"
                ]
                if not unhealthy:
                    return last
            time.sleep(1.0)
        raise TimeoutError(
            f"Airflow on {self.url} not healthy within {timeout:.0f}s (last: {last}); log {self.log_path}:\n"
            + self.log_tail()
        )

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM to the whole process group (and session), SIGKILL to whatever is left after ``grace``."""
        process, self._process = self._process, None
        self._token = None
        if process is None:
            return
        sid = process.pid  # start_new_session: session id == group id == the parent's pid
        self._signal_all(sid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            process.poll()  # reap the parent so that it does not linger as a zombie group member
            if not self._session_alive(sid):
                break
            time.sleep(0.2)
        else:
            self._signal_all(sid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until ``airflow standalone`` exits (`make up` in the foreground); its exit code."""
        return self._process.wait(timeout) if self._process else None

    def close(self) -> None:
        self.stop()
        self._client.close()

    def __enter__(self) -> StandaloneAirflow:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _session_members(sid: int) -> list[int]:
        """Processes in session ``sid`` (Linux, via /proc): task runners move to process groups of their
        own, but stay in the session."""
        proc = Path("/proc")
        if not proc.is_dir():
            return []
        members = []
        for entry in proc.iterdir():
            if entry.name.isdigit():
                try:
                    if os.getsid(int(entry.name)) == sid:
                        members.append(int(entry.name))
                except OSError:
                    continue
        return members

    def _signal_all(self, sid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(sid, sig)
        for pid in self._session_members(sid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def _session_alive(self, sid: int) -> bool:
        members = self._session_members(sid)
        if members:
            return any(not _is_zombie(pid) for pid in members)
        try:
            os.killpg(sid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    # -- login -----------------------------------------------------------------------------------------

    @property
    def passwords_file(self) -> Path:
        return self.home / PASSWORDS_FILE

    @property
    def password(self) -> str:
        """The generated admin password (written by ``airflow standalone`` on its first start)."""
        if self._password is None:
            passwords = json.loads(self.passwords_file.read_text())
            self._password = passwords[self.username]
        return self._password

    def token(self, refresh: bool = False) -> str:
        """A bearer token for the admin user (POST /auth/token), cached."""
        if self._token is None or refresh:
            if self.passwords_file.exists():
                response = self._client.post(
                    f"{self.url}/auth/token", json={"username": self.username, "password": self.password}
                )
            else:  # no generated password: only [core] simple_auth_manager_all_admins=True gives a token
                response = self._client.get(f"{self.url}/auth/token")
            if response.is_error:
                raise AirflowApiError(
                    response.request.method, str(response.url), response.status_code, _body(response)
                )
            self._token = response.json()["access_token"]
        return self._token

    # -- REST API --------------------------------------------------------------------------------------

    def api(
        self,
        method: str,
        path: str,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """Call the REST API and return the parsed JSON (None for an empty body).

        ``path`` is relative to ``/api/v2`` (``/dags/my_dag``) unless it starts with ``/api/`` or
        ``/auth/``. Path segments holding run ids must be URL-quoted by the caller (``quote(run_id,
        safe="")``). Raises AirflowApiError, carrying the response body, on an HTTP error.
        """
        url = self.url + (path if path.startswith(("/api/", "/auth/")) else "/api/v2" + path)
        for attempt in range(2):
            response = self._request(method, url, json, params, self.token(refresh=attempt > 0))
            if response.status_code != 401:
                break
        if response.is_error:
            raise AirflowApiError(method, url, response.status_code, _body(response))
        return response.json() if response.content else None

    def _request(self, method: str, url: str, json: Any, params: Any, token: str) -> httpx.Response:
        """One request; a GET that times out is sent again (twice at most): on a loaded machine the
        api-server can wait on SQLite's lock longer than the client's timeout. Writes are not repeated."""
        attempts = 3 if method == "GET" else 1
        for attempt in range(1, attempts + 1):
            try:
                return self._client.request(
                    method, url, json=json, params=params, headers={"Authorization": f"Bearer {token}"}
                )
            except httpx.TimeoutException:
                if attempt == attempts:
                    raise

    # -- diagnostics -----------------------------------------------------------------------------------

    def _bind_failed(self) -> bool:
        """Whether a component of this start logged a failed bind (the api-server then exits, and
        standalone goes on without it)."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                return b"address already in use" in log.read().lower()
        except FileNotFoundError:
            return False


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"

"""A moto server on a free loopback port, for the local stack, the tests and the benchmarks.

It runs as a subprocess (not in-process) so that Airflow subprocesses, spark-submit and the benchmark's
baseline all reach the same AWS state over HTTP, exactly as they would reach AWS. It is moto behind the
project's fault injector (``aws_endpoint.py``): off unless a ``FaultPlan`` is given, at start or at runtime.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from dataplatform.devstack.faults import FaultPlan


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoServer:
    """Start with ``MotoServer().start()`` or as a context manager; ``url`` is the endpoint."""

    def __init__(
        self,
        port: int | None = None,
        log_path: Path | None = None,
        faults: FaultPlan | None = None,
        request_log: Path | None = None,
    ):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.faults = faults
        self.request_log = request_log
        self._process: subprocess.Popen | None = None
        self._recording_path = Path(tempfile.gettempdir()) / f"moto-recording-{self.port}.jsonl"

    def start(self, timeout: float = 60.0, attempts: int = 3) -> MotoServer:
        # free_port() releases the port before moto binds it, so another process can take it in between:
        # then our server dies with "address in use" (perhaps after that process answered our health
        # check), and we try again on another port.
        for attempt in range(1, attempts + 1):
            if self._start_once(timeout):
                return self
            if attempt < attempts:
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
        raise RuntimeError(f"moto server did not start after {attempts} attempts (log: {self.log_path})")

    def _start_once(self, timeout: float) -> bool:
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        # Recording stays off until start_recording(); moto treats any non-empty
        # MOTO_ENABLE_RECORDING as "on", so the variable must be absent, not "false".
        env = {k: v for k, v in os.environ.items() if k != "MOTO_ENABLE_RECORDING"}
        env["MOTO_RECORDER_FILEPATH"] = str(self._recording_path)
        env["MOTO_PORT"] = str(self.port)
        command = [
            sys.executable,
            "-m",
            "dataplatform.devstack.aws_endpoint",
            "-H",
            "127.0.0.1",
            "-p",
            str(self.port),
        ]
        if self.faults is not None:
            command += ["--faults", self.faults.to_json()]
        if self.request_log is not None:
            command += ["--request-log", str(self.request_log)]
        self._process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2).close()
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
                continue
            time.sleep(0.3)
            return self._process.poll() is None
        self.stop()
        raise RuntimeError(f"moto server did not answer on {self.url} within {timeout:.0f}s")

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
        self._process = None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- moto's control API ----------------------------------------------------------------------------

    def _post(self, path: str, data: bytes = b"") -> bytes:
        request = urllib.request.Request(f"{self.url}{path}", data=data, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()

    def reset(self) -> None:
        """Forget every resource (between tests)."""
        self._post("/moto-api/reset")

    # -- the fault injector's control API (aws_endpoint.py) ---------------------------------------------

    def set_faults(self, plan: FaultPlan | None) -> None:
        """Inject ``plan``'s faults from now on (None: none), e.g. off while seeding, on for the runs."""
        self.faults = plan
        self._post("/_dataplatform/faults", plan.to_json().encode() if plan else b"{}")

    def fault_stats(self) -> dict:
        """Requests and faults since the start or the last ``reset_fault_stats``: ``requests``,
        ``requests_by_service``, ``faults``, ``faults_by_kind``, ``faults_by_operation``, ``plan``."""
        with urllib.request.urlopen(f"{self.url}/_dataplatform/faults", timeout=30) as response:
            return json.loads(response.read())

    def reset_fault_stats(self) -> None:
        self._post("/_dataplatform/faults/reset")

    def set_phase(self, label: str) -> None:
        """Label the request-log lines that follow (the DAG run that is running: the IAM check reads it)."""
        self._post("/_dataplatform/phase", json.dumps({"phase": label}).encode())

    def end_emr_step(self, cluster_id: str, state: str, reason: str | None = None) -> dict:
        """End the running step of ``cluster_id`` as EMR would (``aws_endpoint.end_emr_step``)."""
        document = {"cluster_id": cluster_id, "state": state, "reason": reason}
        return json.loads(self._post("/_dataplatform/emr/end-step", json.dumps(document).encode()))

    def start_recording(self) -> None:
        self._post("/moto-api/recorder/reset-recording")
        self._post("/moto-api/recorder/start-recording")

    def stop_recording(self) -> None:
        self._post("/moto-api/recorder/stop-recording")

    def recorded_requests(self, target_prefix: str = "") -> list[dict]:
        """Requests recorded since ``start_recording``: ``{"target", "body"}`` with JSON bodies decoded.

        ``target`` is the X-Amz-Target header (``ElasticMapReduce.RunJobFlow``); only JSON-protocol
        requests whose target starts with ``target_prefix`` are returned.
        """
        with urllib.request.urlopen(f"{self.url}/moto-api/recorder/download-recording", timeout=30) as resp:
            lines = resp.read().decode().splitlines()
        requests = []
        for line in lines:
            entry = json.loads(line)
            headers = {k.lower(): v for k, v in (entry.get("headers") or {}).items()}
            target = headers.get("x-amz-target", "")
            if not target or not target.startswith(target_prefix):
                continue
            body = entry.get("body") or ""
            if entry.get("body_encoded"):
                body = base64.b64decode(body).decode()
            requests.append({"target": target, "body": json.loads(body) if body else {}})
        return requests


def connection_uri_json(endpoint_url: str, region: str = "us-east-1") -> str:
    """The ``AIRFLOW_CONN_AWS_DEFAULT`` value that points Airflow's AWS hooks at a moto server."""
    return json.dumps(
        {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": endpoint_url, "region_name": region},
        }
    )

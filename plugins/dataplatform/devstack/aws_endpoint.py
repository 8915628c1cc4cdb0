"""The local AWS endpoint: moto's server app behind a fault injector and a request log.

``python -m dataplatform.devstack.aws_endpoint --port P [--faults JSON] [--request-log PATH]`` serves
moto as ``python -m moto.server`` does (same app, same request handler; two costs cut, see ``moto_app``
and ``FailedRequestsLogHandler`` in ``main``; S3 listings that scan the whole bucket, ``moto_s3``; SQS's
quadratic drain, ``moto_sqs``; Glue's UpdateTable version check, which moto lacks, ``moto_glue``) and, for
every signed AWS request:

* draws whether it gets a fault (``faults.FaultPlan``: rate, seed, kinds, services) and answers with
  AWS's error shape, resets the connection before processing, or processes it and never answers
  (``read_timeout``: the write may have happened and the client cannot know);
* adds the modelled latency;
* counts it (``GET /_dataplatform/faults``) and writes one JSON line to the request log: service,
  operation, method, path, query keys, status, fault, and the phase set by ``POST /_dataplatform/phase``
  (the DAG run that is running), which is what the IAM check reads.

The plan can be replaced at runtime (``POST /_dataplatform/faults`` with a plan, ``{}`` for off), so a
stack seeds its data without faults and then runs its DAGs with them.

``POST /_dataplatform/emr/end-step`` ``{"cluster_id", "state": "COMPLETED" | "FAILED", "reason"}`` does
what EMR does when a cluster's running step ends, which moto never does (its steps stay RUNNING and its
clusters never end by themselves): ``end_emr_step``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import signal
import socket
import struct
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from dataplatform.devstack.aws_requests import AwsRequest, identify, protocol_of
from dataplatform.devstack.faults import FaultDice, FaultKind, FaultPlan, error_response

CONTROL_PREFIX = "/_dataplatform/"


class FaultStats:
    """Counters of what the endpoint saw and injected since the last reset."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests: Counter[str] = Counter()
            self.faults_by_kind: Counter[str] = Counter()
            self.faults_by_operation: Counter[str] = Counter()

    def count(self, request: AwsRequest, fault: FaultKind | None) -> None:
        with self._lock:
            self.requests[request.service] += 1
            if fault:
                self.faults_by_kind[fault.name] += 1
                self.faults_by_operation[f"{request.service}:{request.operation}"] += 1

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": sum(self.requests.values()),
                "requests_by_service": dict(self.requests),
                "faults": sum(self.faults_by_kind.values()),
                "faults_by_kind": dict(self.faults_by_kind),
                "faults_by_operation": dict(self.faults_by_operation),
            }


class RequestLog:
    """JSON lines, one per signed AWS request, labelled with the current phase."""

    def __init__(self, path: Path | None):
        self.phase = "start"
        self._lock = threading.Lock()
        self._file = open(path, "a", buffering=1) if path else None  # noqa: SIM115 (lives as long as the server)

    def write(self, request: AwsRequest, method: str, path: str, query: str, status: int, fault, agent: str):
        if self._file is None:
            return
        keys = sorted({item.partition("=")[0] for item in query.split("&") if item})
        line = {
            "t": round(time.time(), 3),
            "phase": self.phase,
            "service": request.service,
            "operation": request.operation,
            "method": method,
            "path": path,
            "query": keys,
            "status": status,
            "fault": fault.name if fault else None,
            "user_agent": agent[:400],
        }
        with self._lock:
            self._file.write(json.dumps(line) + "\n")


class FaultInjector:
    """WSGI middleware in front of moto's dispatcher."""

    def __init__(self, app, plan: FaultPlan, request_log: RequestLog):
        self.app = app
        self.stats = FaultStats()
        self.log = request_log
        self._lock = threading.Lock()
        self._set_plan(plan)

    def _set_plan(self, plan: FaultPlan) -> None:
        with self._lock:
            self.plan = plan
            self._dice = FaultDice(plan)

    def __call__(self, environ: dict[str, Any], start_response):
        path = environ.get("PATH_INFO", "") or "/"
        if path.startswith(CONTROL_PREFIX):
            return self._control(environ, path, start_response)
        method = environ.get("REQUEST_METHOD", "GET")
        query = environ.get("QUERY_STRING", "")
        headers = _headers(environ)
        body = _peek_body(environ, headers)
        request = identify(method, path, query, headers, body)
        if request is None:  # moto's own API, unsigned calls: never faulted, not logged
            return self.app(environ, start_response)
        with self._lock:
            fault = self._dice.choose(request.service, request.operation)
            delay = self._dice.latency_seconds(request.service)
        if delay:
            time.sleep(delay)
        self.stats.count(request, fault)
        agent = headers.get("user-agent", "")
        if fault is None:
            return self._answer(environ, start_response, request, method, path, query, agent)
        if fault.name == "connection_reset":
            self.log.write(request, method, path, query, 0, fault, agent)
            _reset_connection(environ)
        if fault.name == "read_timeout":
            status = _run_and_discard(self.app, environ)
            self.log.write(request, method, path, query, status, fault, agent)
            time.sleep(self.plan.timeout_seconds)
            _reset_connection(environ)
        status, response_headers, payload = error_response(fault, protocol_of(request.service), method, body)
        self.log.write(request, method, path, query, status, fault, agent)
        start_response(f"{status} {fault.code.rsplit('#', 1)[-1]}", [*response_headers, _length(payload)])
        return [payload]

    def _answer(self, environ, start_response, request, method, path, query, agent):
        captured: dict[str, int] = {}

        def recording_start_response(status, headers, exc_info=None):
            captured["status"] = int(status.split(" ", 1)[0])
            return start_response(status, headers, exc_info)

        result = self.app(environ, recording_start_response)
        self.log.write(request, method, path, query, captured.get("status", 0), None, agent)
        return result

    def _control(self, environ, path: str, start_response):
        method = environ.get("REQUEST_METHOD", "GET")
        name = path[len(CONTROL_PREFIX) :].strip("/")
        try:
            document = _json_body(environ) if method == "POST" else {}
            if name == "faults" and method == "POST":
                self._set_plan(FaultPlan.from_dict(document) if document else FaultPlan())
            elif name == "faults/reset" and method == "POST":
                self.stats.reset()
            elif name == "phase" and method == "POST":
                self.log.phase = str(document.get("phase", ""))
            elif name == "emr/end-step" and method == "POST":
                return _json(start_response, 200, end_emr_step(document))
            elif not (name == "faults" and method == "GET"):
                return _json(start_response, 404, {"error": f"no control {method} {path}"})
        except ValueError as error:
            return _json(start_response, 400, {"error": str(error)})
        return _json(start_response, 200, {"plan": json.loads(self.plan.to_json()), **self.stats.as_dict()})


def end_emr_step(document: dict) -> dict:
    """The cluster's running step ends in ``state``, and the cluster as EMR ends it: a failed step whose
    ``ActionOnFailure`` is ``TERMINATE_CLUSTER`` terminates it with errors; a cluster that does not stay
    alive without steps terminates when its last step has ended. Returns the step's and cluster's states."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.core.utils import utcnow
    from moto.emr.models import emr_backends

    state = document.get("state")
    if state not in ("COMPLETED", "FAILED"):
        raise ValueError(f"state must be COMPLETED or FAILED, got {state!r}")
    backend = emr_backends[DEFAULT_ACCOUNT_ID][document.get("region", "us-east-1")]
    cluster = backend.clusters.get(str(document.get("cluster_id")))
    if cluster is None:
        raise ValueError(f"no EMR cluster {document.get('cluster_id')!r}")
    running = [step for step in cluster.steps if step.state == "RUNNING"]
    if not running:
        raise ValueError(f"EMR cluster {cluster.id} has no running step")
    step = running[0]
    step.state, step.end_date_time = state, utcnow()
    if document.get("reason"):
        step.last_state_change_reason = str(document["reason"])
    pending = [other for other in cluster.steps if other.state == "PENDING"]
    if state == "FAILED" and step.action_on_failure == "TERMINATE_CLUSTER":
        cluster.terminate()
        cluster.state = "TERMINATED_WITH_ERRORS"
    elif not pending and not cluster.keep_job_flow_alive_when_no_steps:
        cluster.terminate()
    return {"step_id": step.id, "step_state": step.state, "cluster_state": cluster.state}


class _ConnectionDropped(ConnectionResetError):
    """Raised from the app: werkzeug treats a ConnectionError as a dropped connection and sends nothing."""


def _reset_connection(environ: dict[str, Any]) -> None:
    sock = environ.get("werkzeug.socket")
    if isinstance(sock, socket.socket):
        # Linger 0: the close that follows sends RST, as a load balancer that drops the connection does.
        # The shutdown ends werkzeug's keep-alive loop on this connection; without it the server would wait
        # for the client's next request while the client waits for this answer.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    raise _ConnectionDropped("fault injected")


def _run_and_discard(app, environ: dict[str, Any]) -> int:
    """Process the request for real (its effects happen) and return the status that is never sent."""
    captured: dict[str, int] = {}

    def start_response(status, headers, exc_info=None):
        captured["status"] = int(status.split(" ", 1)[0])
        return lambda data: None

    result = app(environ, start_response)
    try:
        for _ in result:
            pass
    finally:
        close = getattr(result, "close", None)
        if close:
            close()
    return captured.get("status", 0)


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    headers = {
        key[5:].replace("_", "-").lower(): value for key, value in environ.items() if key.startswith("HTTP_")
    }
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    return headers


def _peek_body(environ: dict[str, Any], headers: dict[str, str]) -> bytes | None:
    """The body, when a decision needs it (the query protocol's Action, a transaction's items); it is put
    back for moto. S3 uploads are never read here."""
    target = headers.get("x-amz-target", "")
    form = "x-www-form-urlencoded" in headers.get("content-type", "")
    if not (form and not target) and not target.endswith("TransactWriteItems"):
        return None
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    return body


def _json_body(environ: dict[str, Any]) -> dict:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else b""
    document = json.loads(raw or b"{}")
    if not isinstance(document, dict):
        raise ValueError("expected a JSON object")
    return document


def _json(start_response, status: int, document: dict):
    payload = json.dumps(document).encode()
    start_response(f"{status} {'OK' if status == 200 else 'Error'}", [("Content-Type", "application/json")])
    return [payload]


def _length(payload: bytes) -> tuple[str, str]:
    return ("Content-Length", str(len(payload)))


def moto_app():
    """moto's server app (``DomainDispatcherApplication``), which matches each request's host against the
    URL patterns of every service it emulates, one after another, under a lock: a twentieth of the
    server's CPU on the lake-health page's reads. The service of a host never changes: looked up once."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    class HostCachingDispatcher(DomainDispatcherApplication):
        @functools.lru_cache(maxsize=256)  # noqa: B019 (one instance, alive as long as the server)
        def get_backend_for_host(self, host: str | None) -> Any:
            return super().get_backend_for_host(host)

    return HostCachingDispatcher(create_backend_app)


def main(argv: list[str] | None = None) -> None:
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import run_simple

    from dataplatform.devstack.moto_glue import check_table_versions
    from dataplatform.devstack.moto_s3 import speed_up_s3_listing
    from dataplatform.devstack.moto_sqs import speed_up_sqs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    parser.add_argument("--faults", default="", help="a FaultPlan as JSON (default: off)")
    parser.add_argument("--request-log", type=Path, default=None)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    class FailedRequestsLogHandler(MotoRequestHandler):
        """werkzeug logs every request: a tenth of the server's CPU on the lake-health page's ~300 reads.
        Its log (moto.log) keeps the ones that failed (4xx, 5xx: the ones to look at); every request,
        with its status and fault, is in the request log (``--request-log``, which `make chaos` keeps)."""

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            if str(code)[:1] in ("4", "5"):
                super().log_request(code, size)

    speed_up_sqs()
    speed_up_s3_listing()
    check_table_versions()
    plan = FaultPlan.from_dict(json.loads(args.faults)) if args.faults else FaultPlan()
    app = FaultInjector(moto_app(), plan, RequestLog(args.request_log))
    run_simple(args.host, args.port, app, threaded=True, request_handler=FailedRequestsLogHandler)


if __name__ == "__main__":
    main()

"""The crash proxy: an HTTP forwarder in front of the moto server that kills a process group at the k-th AWS
request it forwards.

Every AWS client of a task goes through it (boto3 and the provider hooks, pyiceberg's PyArrow S3 FileIO and
Glue client, Spark's S3A in the spark-submit JVM), so "the k-th AWS call" is counted where the calls meet,
whatever library makes them. Two kill points per request:

- ``before``: the request arrives, the task's process group is killed, the request is never forwarded
  (AWS never saw it);
- ``after``: the request is forwarded and moto's answer read in full (the call took effect), then the
  process group is killed before the answer goes back (the task never learns it succeeded).

Run as ``python -m tests.crash.proxy <upstream url> <port file>``; control it over HTTP under
``/crash-api/``: ``POST arm`` ``{"pgid", "k", "when"}`` (``k`` null: count only), ``GET count``,
``POST disarm``. Requests under ``/moto-api/`` pass through uncounted.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# Hop-by-hop headers, and Expect: the proxy answers 100-continue itself and forwards a whole body.
_NOT_FORWARDED = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "expect",
    "proxy-connection",
    "te",
    "upgrade",
}


class Trap:
    """The armed kill point and the request count since arming (one task runs at a time)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.pgid: int | None = None
        self.k: int | None = None
        self.when = "after"
        self.killed = False

    def arm(self, pgid: int | None, k: int | None, when: str) -> None:
        with self.lock:
            self.count, self.pgid, self.k, self.when, self.killed = 0, pgid, k, when, False

    def take(self) -> str | None:
        """Count one request; the kill point (``before`` / ``after``) when it is the armed one."""
        with self.lock:
            self.count += 1
            if self.k is not None and not self.killed and self.count == self.k:
                self.killed = True
                return self.when
            return None

    def kill(self) -> None:
        if self.pgid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGKILL)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream: urllib.parse.SplitResult
    trap: Trap

    def log_message(self, format, *args):
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, body: bytes, headers: list[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _control(self, body: bytes) -> None:
        action = self.path.split("/crash-api/", 1)[1]
        answer = {"count": self.trap.count, "killed": self.trap.killed}
        if action == "arm":
            request = json.loads(body or b"{}")
            self.trap.arm(request.get("pgid"), request.get("k"), request.get("when", "after"))
        elif action == "disarm":
            self.trap.arm(None, None, "after")
        self._reply(200, json.dumps(answer).encode(), [("Content-Type", "application/json")])

    def _forward(self) -> None:
        body = self._body()
        if self.path.startswith("/crash-api/"):
            self._control(body)
            return
        point = None if self.path.startswith("/moto-api/") else self.trap.take()
        if point == "before":
            self.trap.kill()
            self.close_connection = True
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _NOT_FORWARDED}
        headers["Content-Length"] = str(len(body))
        upstream = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=300)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
            answer = [(k, v) for k, v in response.getheaders() if k.lower() not in _NOT_FORWARDED]
        finally:
            upstream.close()
        if point == "after":
            self.trap.kill()
            self.close_connection = True
            return
        self.send_response(response.status, response.reason)
        for name, value in answer:
            # A HEAD answer keeps moto's Content-Length (the object's size) with no body.
            if name.lower() != "content-length" or self.command == "HEAD":
                self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _forward


def serve(upstream_url: str, port_file: Path) -> None:
    Handler.upstream = urllib.parse.urlsplit(upstream_url)
    Handler.trap = Trap()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port_file.write_text(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    serve(sys.argv[1], Path(sys.argv[2]))

"""What the local stack's server classes (Airflow standalone, PostgreSQL) share about the one subprocess
each runs, and the loopback port check their tests make after stopping them."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path


class ServerProcess:
    """A class that runs one server as ``self._process`` and logs it to ``self.log_path``."""

    _process: subprocess.Popen | None = None
    log_path: Path

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``port`` can be bound on ``host`` now (nothing listens on it any more)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True

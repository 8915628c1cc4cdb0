"""What the command-line tools (``python -m dataplatform.<pipeline>``) share: standard output carries the
result and nothing else, so ``... | jq`` works; logs and errors go to standard error.

Why a helper is needed: the first AWS client imports Airflow (through the provider's AWS hook), and that
import configures logging for the whole process with every handler on ``sys.stdout`` (Airflow's structlog
setup, ``airflow._shared.logging.configure_logging``, takes the stream from ``sys.stdout`` and has no
setting for it). The hook then logs "AWS Connection ... credentials retrieved" and a deprecation warning,
which would land before the command's JSON.

``run`` therefore points ``sys.stdout`` at standard error while the command runs: the logging set up
meanwhile, a library's ``print`` and a stray ``print`` of our own all land there. The command writes its
result through the ``Output`` it is given, bound to the real standard output. Import Airflow (or anything
that imports it, such as ``dataplatform.aws``) inside the command, not at the top of a ``__main__``
module: its logging must be configured while ``run`` has standard output pointed away.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

from dataplatform.dynamodb import TableNotCreatedError


class CommandError(Exception):
    """The command cannot do what was asked. ``run`` prints the message as one line on standard error
    (no traceback) and exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class Output:
    """The command's result: the only writer to standard output while ``run`` runs the command."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def line(self, text: str = "") -> None:
        print(text, file=self._stream, flush=True)

    def json(self, value: Any) -> None:
        """One JSON document (dates and Decimals as strings)."""
        self.line(json.dumps(value, indent=2, default=str))


def run(command: Callable[[Output], int]) -> int:
    """Run ``command(output)`` with ``sys.stdout`` pointed at standard error; its exit code, or the
    ``CommandError``'s after one line on standard error."""
    output = Output(sys.stdout)
    with contextlib.redirect_stdout(sys.stderr):
        try:
            return command(output)
        # A table not created yet (a fresh stack) is one line too: it says what creates the table.
        except (CommandError, TableNotCreatedError) as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return getattr(exc, "exit_code", 1)

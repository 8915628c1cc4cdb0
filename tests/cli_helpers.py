"""Run the command-line tools as a user does: a new process, nothing shared with the test's interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_cli(package: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m dataplatform.<package> <args>`` with the test run's Airflow environment and
    ``aws_default`` connection (the moto server once the ``moto_server`` fixture runs), minus pytest's
    own variables (Airflow's logging setup behaves differently under pytest)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PYTEST_")}
    return subprocess.run(
        [sys.executable, "-m", f"dataplatform.{package}", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )

"""``benchmarks/hudi_erasure.py`` at a tiny size: the script runs end to end (seed, full rewrite, the Hudi
delete job, the checks) and every check of its JSON line holds. The targets are not asserted: they are
the benchmark's business at its own size, not a test's (no timed assertions).

A subprocess: the benchmark starts its own Spark session with the Hudi bundle, which the shared
``spark`` fixture's session (no Hudi) cannot become.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dataplatform.spark_jars import jar_path

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.hudi]

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "hudi_erasure.py"
TINY = ["--rows", "4000", "--file-groups", "8", "--buckets", "4", "--subjects", "200", "--erase", "3"]


def test_the_benchmark_runs_and_its_checks_hold(tmp_path):
    jar_path("hudi-spark-bundle")  # a clear error naming the jar, before Spark starts
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--storage", "file", *TINY],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON line (exit {run.returncode}):\n{run.stderr[-6000:]}"
    figures = json.loads(lines[-1])
    assert figures["checks"] and all(figures["checks"].values()), figures["checks"]
    assert figures["hudi_rows"] == 4000
    assert figures["rows_deleted"] == figures["subject_rows_before"] > 0
    assert figures["files_rewritten"] == figures["file_groups_holding_subjects"] > 0
    assert figures["job_files_rewritten"] == figures["files_rewritten"]
    # Nothing left behind: the temporary folder is removed.
    assert not any(tmp_path.glob("hudi-bench-*"))

"""Benchmark: how long Airflow takes to parse the whole dags/ folder, as the DAG processor does.

Each repeat parses in a fresh interpreter (imports included, as a DAG-processor child pays them), against
a baseline in the same run: an empty DAG file parsed the same way, i.e. what Airflow itself costs.
Prints one JSON line.

    .venv/bin/python benchmarks/dag_parse.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PARSE = textwrap.dedent(
    """
    import json, sys, time
    started = time.perf_counter()
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(dag_folder=sys.argv[1])
    print(json.dumps({"seconds": time.perf_counter() - started, "dags": len(bag.dags),
                      "errors": len(bag.import_errors)}))
    """
)

EMPTY_DAG = "from airflow.sdk import dag\n\n@dag(schedule=None)\ndef empty():\n    pass\n\nempty()\n"


def parse(folder: Path) -> dict:
    env = {
        "PYTHONPATH": f"{REPO / 'plugins'}:{REPO}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PATH": "/usr/bin:/bin",
        "HOME": tempfile.gettempdir(),
    }
    out = subprocess.run(
        [sys.executable, "-c", PARSE, str(folder)], capture_output=True, text=True, check=True, env=env
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as empty:
        Path(empty, "empty_dag.py").write_text(EMPTY_DAG)
        baseline = [parse(Path(empty))["seconds"] for _ in range(args.repeats)]
    runs = [parse(REPO / "dags") for _ in range(args.repeats)]
    seconds = [run["seconds"] for run in runs]
    print(
        json.dumps(
            {
                "benchmark": "dag_parse",
                "dag_files": len(list((REPO / "dags").glob("*.py"))),
                "dags": runs[0]["dags"],
                "import_errors": runs[0]["errors"],
                "parse_seconds_median": round(statistics.median(seconds), 2),
                "baseline_empty_dag_seconds_median": round(statistics.median(baseline), 2),
                "overhead_seconds": round(statistics.median(seconds) - statistics.median(baseline), 2),
            }
        )
    )


if __name__ == "__main__":
    main()

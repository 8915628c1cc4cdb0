"""``python -m tests.crash [pipeline ...]`` (``make crash``): the full crash campaign on a moto server of its
own; prints ``survived/tried`` per pipeline and merges the figures into ``.local/chaos/crash_points.json``
(a run of some pipelines keeps the others')."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO_ROOT / "plugins"), str(REPO_ROOT)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.crash", description=__doc__)
    parser.add_argument("pipelines", nargs="*", help="pipelines to crash (default: all)")
    parser.add_argument(
        "--per-step", type=int, default=None, help="crash points per task (default: the pipeline's)"
    )
    parser.add_argument(
        "--spark-per-step", type=int, default=3, help="crash points per Spark job (default 3)"
    )
    parser.add_argument("--output", type=Path, default=None, help="results JSON (default .local/chaos/...)")
    args = parser.parse_args(argv)

    from dataplatform.devstack.airflow_env import airflow_env

    home = Path(tempfile.mkdtemp(prefix="dataplatform-crash-"))
    os.environ.update(airflow_env(home, "http://127.0.0.1:9"))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "plugins"), str(REPO_ROOT)])
    os.chdir(REPO_ROOT)

    from dataplatform.devstack.moto_server import MotoServer, connection_uri_json
    from tests.crash.harness import campaign, summary
    from tests.crash.pipelines import NAMES
    from tests.crash.session import RESULTS_PATH, crash_session, pipeline, write_results

    names = args.pipelines or list(NAMES)
    path = args.output or RESULTS_PATH
    results = {}
    with MotoServer(log_path=home / "moto.log") as server:
        os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = connection_uri_json(server.url)
        spark = _spark(server.url) if any(name.startswith("recon") for name in names) else None
        with crash_session(server, home / "crash", spark) as (runner, lake):
            for name in names:
                chosen = pipeline(name)
                per_step = args.per_step or chosen.per_step
                results[name] = campaign(runner, chosen, lake, per_step, args.spark_per_step, report=_say)
                # Written after each pipeline: a long campaign cut short keeps the figures it has.
                merged = write_results(summary({name: results[name]}), path)
    figures = summary(results)
    for name, row in merged["pipelines"].items():
        ran = "" if name in figures["pipelines"] else "  (from an earlier run)"
        print(f"{name:16s} {row['survived']:3d}/{row['tried']:<3d} survived{ran}")
    print(f"crash points survived: {merged['crash_points_survived']} (in {path})")
    return 0 if all(not row["failures"] for row in figures["pipelines"].values()) else 1


def _say(line: str) -> None:
    print(line, flush=True)


def _spark(endpoint: str):
    from tests.crash.pipelines.recon_common import spark_session

    return spark_session(endpoint)


if __name__ == "__main__":
    sys.exit(main())

"""``python -m dataplatform.devstack demo | up | chaos | pools | check-java`` (what ``make demo``, ``make up`` and
``make chaos`` run; ``pools`` prints the config's Airflow pools for MWAA)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dataplatform.devstack.demo import DemoError, check_java, run_demo
from dataplatform.devstack.postgres import PostgresError


def _port(value: str) -> int:
    """An argparse ``type``: a TCP port a user process can listen on."""
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 1024 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 1024 to 65535, got {port}")
    return port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataplatform.devstack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "demo", help="run every DAG with `airflow dags test` on moto + local Spark, print a summary"
    )
    up = sub.add_parser("up", help="moto + seeded demo lake + `airflow standalone` for the web UI")
    up.add_argument("--port", type=_port, default=8080, help="web UI / API port, 1024-65535 (default 8080)")
    up.add_argument(
        "--home",
        type=Path,
        default=None,
        help="AIRFLOW_HOME (default .local/airflow); the shell environment goes beside it, in airflow.env",
    )
    up.add_argument(
        "--db",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="metadata database: SQLite in the home (default), or PostgreSQL (a cluster in <home>/postgres, "
        "LocalExecutor running tasks in parallel; installs the server with apt-get when root and missing)",
    )
    chaos = sub.add_parser(
        "chaos", help="the demo with injected AWS faults and without; compare the final states (make chaos)"
    )
    chaos.add_argument("--rate", type=float, default=0.05, help="fraction of AWS requests faulted (0.05)")
    chaos.add_argument(
        "--seeds",
        type=_seeds,
        default=(1, 2),
        help="comma list of fault seeds, one faulted pass each (default 1,2): the same seed, the same faults",
    )
    chaos.add_argument("--kinds", default="", help="comma list of fault kinds (default: every kind)")
    chaos.add_argument("--dags", default="", help="comma list of DAG ids: only their demo runs (debugging)")
    chaos.add_argument(
        "--db",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="each pass's metadata database: SQLite (default) or a PostgreSQL server of its own",
    )
    chaos.add_argument(
        "--sequential", action="store_true", help="run the passes one after the other (default: at once)"
    )
    pools = sub.add_parser(
        "pools",
        help="print the config's Airflow pools (DATAPLATFORM_ENV picks the config; README Concurrency limits)",
    )
    pools.add_argument(
        "--json",
        action="store_true",
        help="the `airflow pools import` file (default: the body of PATCH /api/v2/pools, for MWAA's invoke-rest-api)",
    )
    sub.add_parser("check-java", help="fail with a clear message unless Java 17 is on PATH")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return run_demo()
        if args.command == "chaos":
            from dataplatform.devstack.chaos import run_chaos

            return run_chaos(
                args.rate,
                args.seeds,
                _comma_list(args.kinds),
                _comma_list(args.dags),
                parallel=not args.sequential,
                db=args.db,
            )
        if args.command == "pools":
            return print_pools(import_file=args.json)
        if args.command == "up":
            from dataplatform.devstack.up import run_up

            return run_up(port=args.port, home=args.home, db=args.db)
        print(check_java())
        return 0
    except (DemoError, PostgresError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def print_pools(import_file: bool) -> int:
    from dataplatform.config import settings
    from dataplatform.pools import pool_bulk_request, pool_import_file

    pools = settings().pools
    print(json.dumps(pool_import_file(pools) if import_file else pool_bulk_request(pools), indent=2))
    return 0


def _seeds(value: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a comma list of integers, got {value!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"must be one or more distinct integers, got {value!r}")
    return seeds


def _comma_list(value: str) -> tuple[str, ...] | None:
    return tuple(part.strip() for part in value.split(",") if part.strip()) or None


if __name__ == "__main__":
    sys.exit(main())

"""``python -m dataplatform.reconciliation status | get <key>``.

AWS clients come from the Airflow connection (``aws_default``), as in the tasks: locally, run it where
``make up`` runs (it prints the connection to export) or inside the Airflow environment.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime


def _clients():
    from dataplatform import aws
    from dataplatform.config import settings
    from spark_jobs.common.storage import Storage

    return settings().reconciliation, aws.client("dynamodb"), Storage(aws.client("s3"))


def status_command() -> int:
    from dataplatform.reconciliation import ledger

    config, dynamodb, _ = _clients()
    status = ledger.status(
        dynamodb, config.ledger_table, config.completeness_window_minutes, datetime.now(UTC)
    )
    print(ledger.format_status(status))
    return 0


def get_command(key: str) -> int:
    from dataplatform.reconciliation import index

    config, dynamodb, storage = _clients()
    artifact = index.get_artifact(dynamodb, storage, config.index_table, key)
    if artifact is None:
        print(f"no artifact {key!r} in the index {config.index_table}", file=sys.stderr)
        return 1
    print(json.dumps(artifact, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataplatform.reconciliation")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", help="backlog, batches per state, latest complete window")
    get = commands.add_parser("get", help="one artifact: one index read and one ranged GET")
    get.add_argument("key", help="the artifact key (order id)")
    args = parser.parse_args(argv)
    if args.command == "status":
        return status_command()
    return get_command(args.key)


if __name__ == "__main__":
    sys.exit(main())

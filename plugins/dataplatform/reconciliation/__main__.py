"""``python -m dataplatform.reconciliation status [--json] | get <key> | ack-invalid <batch_id>``.

Standard output carries only the result (``get``: the artifact as JSON; ``status --json``: the status as
JSON); logs and errors go to standard error (``dataplatform.cli``).

AWS clients come from the Airflow connection (``aws_default``), as in the tasks: locally, run it where
``make up`` runs (it prints the connection to export) or inside the Airflow environment.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from dataplatform import cli
from dataplatform.dynamodb import table_must_exist


def _clients():
    from dataplatform import aws
    from dataplatform.config import settings
    from spark_jobs.common.storage import Storage

    return settings().reconciliation, aws.client("dynamodb"), Storage(aws.client("s3"))


def status_command(out: cli.Output, as_json: bool) -> int:
    from dataplatform.reconciliation import ledger

    config, dynamodb, _ = _clients()
    with table_must_exist(config.ledger_table, ledger.TABLES_CREATED_BY):
        status = ledger.status(
            dynamodb, config.ledger_table, config.completeness_window_minutes, datetime.now(UTC)
        )
    if as_json:
        out.json(status.as_dict())
    else:
        out.line(ledger.format_status(status))
    return 0


def _artifact_key(value: str) -> str:
    """An argparse ``type``: an artifact key (an order id) as the index holds it: 1-1,024 characters (a
    DynamoDB key's bound), no control characters."""
    if not 1 <= len(value) <= 1024 or any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise argparse.ArgumentTypeError(
            f"an artifact key is 1-1024 characters without control characters, got {len(value)} characters"
        )
    return value


def _batch_id(value: str) -> str:
    """An argparse ``type``: a batch id as landing folders are named."""
    from dataplatform.reconciliation.manifests import BATCH_ID

    if not BATCH_ID.fullmatch(value):
        shown = value if len(value) <= 140 else f"{value[:140]}..."
        raise argparse.ArgumentTypeError(f"a batch id matches {BATCH_ID.pattern}, got {shown!r}")
    return value


def get_command(out: cli.Output, key: str) -> int:
    from dataplatform.reconciliation import index, ledger

    config, dynamodb, storage = _clients()
    with table_must_exist(config.index_table, ledger.TABLES_CREATED_BY):
        artifact = index.get_artifact(dynamodb, storage, config.index_table, key)
    if artifact is None:
        raise cli.CommandError(f"no artifact {key!r} in the index {config.index_table}")
    out.json(artifact)
    return 0


def ack_invalid_command(out: cli.Output, batch_id: str) -> int:
    from dataplatform.reconciliation import ledger

    config, dynamodb, _ = _clients()
    try:
        with table_must_exist(config.ledger_table, ledger.TABLES_CREATED_BY):
            acknowledged = ledger.acknowledge_invalid(
                dynamodb, config.ledger_table, batch_id, datetime.now(UTC)
            )
    except ledger.LedgerConflict as exc:
        raise cli.CommandError(f"refused: {exc}", exit_code=2) from exc
    out.line(f"INVALID batch {batch_id} {'acknowledged' if acknowledged else 'was already acknowledged'}")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m dataplatform.reconciliation")
    commands = root.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="backlog, batches per state, latest complete window")
    status.add_argument("--json", action="store_true", help="the status as one JSON document")
    status.set_defaults(run=lambda out, args: status_command(out, args.json))
    get = commands.add_parser("get", help="one artifact as JSON: one index read and one ranged GET")
    get.add_argument("key", type=_artifact_key, help="the artifact key (order id)")
    get.set_defaults(run=lambda out, args: get_command(out, args.key))
    ack = commands.add_parser(
        "ack-invalid", help="an INVALID batch has been seen to: `status` stops listing it (rerun: no-op)"
    )
    ack.add_argument("batch_id", type=_batch_id)
    ack.set_defaults(run=lambda out, args: ack_invalid_command(out, args.batch_id))
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return cli.run(lambda out: args.run(out, args))


if __name__ == "__main__":
    sys.exit(main())

"""``python -m dataplatform.health status [--json]``: every pipeline's state, figures and findings, as the
lake-health page and the ``lake_health`` DAG see them (``dataplatform.health.figures``).

Standard output carries only the result (``--json``: ``lake_figures`` as one JSON document); logs and
errors go to standard error (``dataplatform.cli``). AWS clients come from the Airflow connection
(``aws_default``), as in the tasks: locally, run it where ``make up`` runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from dataplatform import cli


def status_command(out: cli.Output, as_json: bool) -> int:
    from dataplatform.config import settings
    from dataplatform.health.figures import clients_from_connection, lake_figures

    figures = lake_figures(settings(), clients_from_connection(), datetime.now(UTC))
    if as_json:
        out.json(figures)
    else:
        out.line(format_status(figures))
    return 0


def format_status(figures: dict[str, Any]) -> str:
    """The figures as text for a terminal: one line per pipeline, its findings indented below."""
    lines = [f"lake health ({figures['env']}) at {figures['generated_at']}: {figures['state']}"]
    for block in figures["pipelines"]:
        shown = block["error"] or _headline(block["pipeline"], block["figures"])
        lines.append(f"{block['pipeline']}: {block['state']}: {shown}")
        lines += [f"  {finding['severity']}: {finding['summary']}" for finding in block["findings"]]
        lines += [
            f"  last run {run['dag_id']} {run['run_id']}: {run['reports_uri']}" for run in block["last_runs"]
        ]
    return "\n".join(lines)


def _headline(pipeline: str, figures: dict[str, Any]) -> str:
    if pipeline == "reconciliation":
        window = figures["latest_complete_window"]
        latest = f"{window[0]} .. {window[1]}" if window else "none"
        return f"backlog {figures['backlog']} batches, latest complete window {latest}"
    if pipeline == "gdpr":
        return (
            f"{figures['open']} open, {figures['overdue']} overdue, {figures['due_soon']} due within "
            f"{figures['alert_days_before_deadline']} days, {figures['completed_this_month']} completed this month"
        )
    if pipeline == "iceberg":
        tables = figures["tables"]
        return f"{len(tables)} tables, {sum(t['snapshots'] or 0 for t in tables)} snapshots, " + ", ".join(
            f"{t['table']} maintained {t['last_maintenance'] or 'never'}" for t in tables
        )
    if pipeline == "glue":
        return ", ".join(
            f"{t['table']} newest {'/'.join(t['newest_partition']) if t['newest_partition'] else 'none'}"
            + (f" ({t['lag_minutes']} min ago)" if t["lag_minutes"] is not None else "")
            for t in figures["tables"]
        )
    week = figures["week"]
    return f"{week['launches_priced']} launches priced this week, {week['cost_usd']} USD"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataplatform.health")
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="every pipeline's state, figures and findings")
    status.add_argument("--json", action="store_true", help="the figures as one JSON document")
    args = parser.parse_args(argv)
    return cli.run(lambda out: status_command(out, args.json))


if __name__ == "__main__":
    sys.exit(main())

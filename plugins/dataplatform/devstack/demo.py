"""``make demo``: every DAG of the project run for real on the embedded local stack.

Starts a moto server, migrates a fresh SQLite Airflow database, seeds the demo lake, runs each DAG with
``airflow dags test`` (the real task runner, triggers included), and prints one row per run: the run's
state and what it did, in numbers, taken from the reports the tasks wrote. Everything it started is
stopped at the end, also when a step fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dataplatform.config import REPO_ROOT, settings
from dataplatform.devstack.airflow_env import airflow_env, query_metadata_db
from dataplatform.devstack.moto_server import MotoServer, connection_uri_json
from dataplatform.devstack.seed import GDPR_DEMO
from dataplatform.reports import run_reports

LOCAL_DIR = REPO_ROOT / ".local"


@dataclass(frozen=True)
class DemoRun:
    dag_id: str
    what: str
    logical_date: str | None = None
    conf: dict = field(default_factory=dict)
    # The state the run must end in: "failed" for the run that fails on purpose to show the alerts.
    expect: str = "success"


_TOMORROW = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")

# One or more runs per DAG in dags/; run_demo refuses to start if a DAG has none, so a new DAG cannot be
# forgotten here.
DEMO_RUNS: tuple[DemoRun, ...] = (
    DemoRun("glue_partition_loader", "scheduled day 2024-03-05 (interval)", logical_date="2024-03-06"),
    DemoRun("glue_partition_loader", "manual discover, all tables", conf={"mode": "discover"}),
    DemoRun("glue_partition_loader", "rerun of the discover (no-op)", conf={"mode": "discover"}),
    DemoRun("recon_stateless", "6 batches landed: backlog grouping claims 4"),
    DemoRun("recon_stateful", "prefetch, process, index (as the asset event would)"),
    DemoRun("recon_stateless", "the other 2 batches"),
    DemoRun("recon_stateful", "updates the artifacts of run 1"),
    # Before any maintenance run: each Iceberg table is a finding (never maintained), opened and alerted;
    # the last lake_health runs below clear them (a recovery alert each), so the findings' whole life shows.
    DemoRun("lake_health", "Iceberg tables never maintained: a finding each, alerted once"),
    # Logical date tomorrow: the tag rules tag "the day before the logical date", i.e. today's snapshots.
    DemoRun("iceberg_maintenance", "dry run: reports, changes nothing", _TOMORROW, {"dry_run": True}),
    DemoRun(
        "iceberg_maintenance",
        "tags, compaction (orders' 7 small files), expiry, unreferenced files, lifecycle "
        "(clickstream: Iceberg's Spark procedures)",
        _TOMORROW,
    ),
    DemoRun("iceberg_maintenance", "rerun (no-op)", _TOMORROW),
    DemoRun(
        "gdpr_erasure",
        "2 requests (CLI + trigger form): delete, purge, sweep of tagged copies, verify, audit "
        "(payment_ledger: the Spark job)",
        conf={"subject_ids": [GDPR_DEMO["erase"][1]]},
    ),
    DemoRun("gdpr_erasure", "rerun (no open request: no-op)"),
    DemoRun(
        "benchmark_pricing",
        "FAILS ON PURPOSE (a launch id that does not exist): alerts for the task and the run",
        conf={"launch_ids": ["no-such-launch"]},
        expect="failed",
    ),
    DemoRun("benchmark_pricing", "7 COMPLETE launches: 6 priced, 1 without a price (alert: recovered)"),
    DemoRun("benchmark_pricing", "rerun: only the unpriceable launch is tried again"),
    DemoRun(
        "iceberg_archive_register",
        "oldest kept metadata of orders as demo_lake.orders_archive",
        conf={"table": "orders", "metadata_file": "oldest", "archive_table": "orders_archive"},
    ),
    DemoRun("lake_health", "every pipeline's figures: the Iceberg findings cleared, a recovery alert each"),
    DemoRun("lake_health", "rerun: no finding, no alert"),
)


class DemoError(RuntimeError):
    pass


def check_java() -> str:
    """Spark needs Java 17; say so plainly instead of letting spark-submit fail obscurely."""
    java = shutil.which("java")
    if not java:
        raise DemoError(
            "Java 17 is required (Spark). Install it, e.g. `apt-get install openjdk-17-jre-headless`."
        )
    output = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    first = output.splitlines()[0] if output else ""
    if '"17' not in first and " 17" not in first:
        raise DemoError(
            f"Java 17 is required (Spark 3.5); found: {first or 'unknown'}. Set JAVA_HOME to a JDK 17."
        )
    return first


def dag_ids_in_repo() -> set[str]:
    """DAG ids declared in dags/ (read from the source, so nothing is imported)."""
    import re

    pattern = re.compile(r'dag_id="([A-Za-z0-9_.\-]+)"')
    return {m for path in (REPO_ROOT / "dags").glob("*.py") for m in pattern.findall(path.read_text())}


def _latest_run(env: dict[str, str], dag_id: str) -> tuple[str, str]:
    rows = query_metadata_db(
        env,
        "SELECT run_id, state FROM dag_run WHERE dag_id = :dag_id ORDER BY id DESC LIMIT 1",
        dag_id=dag_id,
    )
    return (rows[0][0], rows[0][1]) if rows else ("-", "not created")


def _describe(reports: list[dict]) -> str:
    lines = [report.get("summary") or json.dumps(report, default=str)[:120] for report in reports]
    return "\n".join(lines) or "(no report written)"


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    headers = ("DAG", "run", "state", "what it did")
    widths = [
        max(len(headers[i]), *(len(r[i].splitlines()[0]) if r[i] else 0 for r in rows)) for i in range(3)
    ]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+" + "-" * 60
    print(line)
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)) + " | " + headers[3])
    print(line)
    for dag_id, what, state, did in rows:
        did_lines = did.splitlines() or [""]
        print(
            "| "
            + " | ".join(c.ljust(w) for c, w in zip((dag_id, what, state), widths, strict=True))
            + " | "
            + did_lines[0]
        )
        for extra in did_lines[1:]:
            print("| " + " | ".join("".ljust(w) for w in widths) + " | " + extra)
    print(line)


def _quiet_airflow_logging() -> None:
    """The seeding here goes through Airflow's AWS hook, which logs connection details and deprecation
    warnings at import; the runs' own logs are in files, so keep this console to the summary."""
    import warnings

    warnings.filterwarnings("ignore")
    # Read by Airflow's logging setup when it is first imported in this process (by the first client);
    # the `airflow dags test` subprocesses get their own environment and log at INFO to their files.
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"


def seed_local_lake(moto_url: str, hudi: bool = True):
    """Point this process's ``aws_default`` connection at the moto server, seed the demo lake, say what
    was seeded, and return the S3 client (to read run reports with). ``hudi=False`` leaves out the Hudi
    tables (a Spark job), for runs that do not erase them."""
    os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = connection_uri_json(moto_url)
    _quiet_airflow_logging()
    from dataplatform import aws
    from dataplatform.devstack.seed import (
        ALERT_QUEUE,
        RECENT_DAYS,
        seed_alert_topic,
        seed_demo,
        seed_gdpr,
        seed_gdpr_hudi,
        seed_iceberg,
        seed_pricing,
        seed_recent_days,
        seed_recon,
    )
    from dataplatform.gdpr.__main__ import main as gdpr_cli

    s3 = aws.client("s3")
    seeded = seed_demo(s3, aws.client("glue"), settings())
    print(
        "demo lake seeded: "
        + ", ".join(
            f"{name} {c['partitions']} partitions + {c['invalid_prefixes']} invalid prefixes"
            for name, c in seeded.items()
        )
    )
    recent = seed_recent_days(s3, settings())
    print(
        f"and the last {RECENT_DAYS} days up to today (for scheduled runs): "
        + ", ".join(f"{name} {n} partitions" for name, n in recent.items())
    )
    iceberg = seed_iceberg(_demo_catalog(moto_url), s3, settings())
    print(
        "iceberg tables written by pyiceberg: "
        + ", ".join(
            f"{n} ({c} snapshots; maintained by {settings().iceberg.tables[n].backend})"
            for n, c in iceberg.items()
        )
    )
    gdpr = seed_gdpr(_demo_catalog(moto_url), s3, settings())
    print(
        "gdpr datasets written by pyiceberg: "
        + ", ".join(
            f"{n} ({c['rows']} rows, erased by {settings().gdpr.datasets[n].engine}"
            + (
                f"; maintenance with unreferenced.action tag left {c['tagged_files']} files tagged"
                if c["tagged_files"]
                else ""
            )
            + ")"
            for n, c in gdpr.items()
        )
    )
    hudi = seed_gdpr_hudi(s3, settings(), moto_url, ("testing", "testing", None)) if hudi else {}
    print(
        "gdpr datasets written by Hudi (spark-submit with the Hudi bundle, on moto S3): "
        + ", ".join(f"{n} ({c['table_type']}, {c['commits']} commits)" for n, c in hudi.items())
    )
    print(f"$ python -m dataplatform.gdpr submit --subject-id <customer> --request-id {GDPR_DEMO_REQUEST}")
    gdpr_cli(["submit", "--subject-id", GDPR_DEMO["erase"][0], "--request-id", GDPR_DEMO_REQUEST])
    launches = seed_pricing(settings())
    print(
        f"workflow launches on moto (Batch, ECS, EC2, EBS, FSx): {len(launches)} in "
        f"{settings().pricing.launches_table}, "
        + ", ".join(
            f"{n} {status}" for status, n in sorted(Counter(launch["status"] for launch in launches).items())
        )
    )
    landed = seed_recon(s3, settings())
    print(
        f"reconciliation: {landed['batches']} batches ({landed['events']} events) landed under "
        f"{settings().reconciliation.landing_uri}"
    )
    topic = settings().alerts.sns_topic_arn
    if topic:
        seed_alert_topic(aws.client("sns"), aws.client("sqs"), topic)
        print(f"alerts: SNS topic {topic} with the SQS queue {ALERT_QUEUE} subscribed")
    return s3


def _demo_catalog(moto_url: str):
    from dataplatform.iceberg.catalog import AwsAccess, load_glue_catalog

    return load_glue_catalog(AwsAccess(settings().aws.region, moto_url, "testing", "testing"))


GDPR_DEMO_REQUEST = "demo-ticket-1"


def show_gdpr_status(env: dict[str, str]) -> None:
    """Where the demo's erasure requests stand, and the audit trail of the one submitted from the CLI."""
    for args in (["status"], ["status", "--request-id", GDPR_DEMO_REQUEST]):
        print(f"\n$ python -m dataplatform.gdpr {' '.join(args)}", flush=True)
        subprocess.run([sys.executable, "-m", "dataplatform.gdpr", *args], env=env, timeout=300)


def show_pricing_commands(env: dict[str, str]) -> None:
    """One priced launch line by line, and reference 06's Graviton2 run priced from the snapshot."""
    for args in (
        ["launch", "germline-wgs-0001"],
        ["emr-serverless", "--vcpu", "404", "--memory-gb", "1616", "--storage-gb", "20000", "--workers", "100",
         "--hours", "0.74", "--arch", "arm64", "--region", "us-east-1"],
    ):  # fmt: skip
        print(f"\n$ python -m dataplatform.pricing {' '.join(args)}", flush=True)
        subprocess.run([sys.executable, "-m", "dataplatform.pricing", *args], env=env, timeout=300)


def show_recon_commands(env: dict[str, str]) -> None:
    """The reconciliation CLI on the demo's state: backlog and completeness, and one artifact (the
    hottest order of the skewed demo data) fetched alone with one index read and one ranged GET."""
    for args in (["status"], ["get", "ORD-0000000"]):
        print(f"\n$ python -m dataplatform.reconciliation {' '.join(args)}", flush=True)
        subprocess.run([sys.executable, "-m", "dataplatform.reconciliation", *args], env=env, timeout=300)


@dataclass(frozen=True)
class RunOutcome:
    run: DemoRun
    run_id: str
    state: str
    seconds: float


def prepare_airflow(home: Path, moto_url: str, database_url: str | None = None) -> dict[str, str]:
    """The environment of an Airflow home pointed at the moto server, its database migrated: SQLite in the
    home, or the PostgreSQL database at ``database_url``."""
    env = airflow_env(home, moto_url, database_url=database_url)
    os.environ["DATAPLATFORM_ENV"] = env["DATAPLATFORM_ENV"]
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    kind = "PostgreSQL" if database_url else "SQLite"
    print(f"airflow metadata database ({kind}) ready in {time.monotonic() - started:.0f}s: {home}")
    return env


def execute_runs(
    runs: Sequence[DemoRun],
    env: dict[str, str],
    moto: MotoServer,
    logs: Path,
) -> list[RunOutcome]:
    """Each run with ``airflow dags test``, in order, its requests labelled with its DAG id in the
    endpoint's request log; the state of each run as the metadata database holds it."""
    logs.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for number, run in enumerate(runs, start=1):
        command = [sys.executable, "-m", "airflow", "dags", "test", run.dag_id]
        if run.logical_date:
            command.append(run.logical_date)
        if run.conf:
            command += ["-c", json.dumps(run.conf)]
        log_path = logs / f"{number:02d}-{run.dag_id}.log"
        print(
            f"[{number}/{len(runs)}] airflow dags test {run.dag_id}: {run.what} (log: {log_path})",
            flush=True,
        )
        started = time.monotonic()
        moto.set_phase(run.dag_id)
        with open(log_path, "w") as log:
            subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=1800)
        moto.set_phase("demo")  # the demo reading the run's reports next: not the DAG's calls
        run_id, state = _latest_run(env, run.dag_id)
        seconds = time.monotonic() - started
        print(f"      {state} in {seconds:.0f}s", flush=True)
        outcomes.append(RunOutcome(run, run_id, state, seconds))
    return outcomes


def check_every_dag_has_a_run() -> None:
    missing = dag_ids_in_repo() - {run.dag_id for run in DEMO_RUNS}
    if missing:
        raise DemoError(f"DAGs without a demo run in dataplatform/devstack/demo.py: {sorted(missing)}")


def run_demo() -> int:
    check_every_dag_has_a_run()
    print(f"java: {check_java()}")
    home = LOCAL_DIR / "demo-airflow"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    # DATAPLATFORM_REQUEST_LOG: where the endpoint logs every AWS request, labelled with the DAG run that
    # made it (seed / <dag_id> / cli), for the IAM check.
    request_log = os.environ.get("DATAPLATFORM_REQUEST_LOG")
    with MotoServer(
        log_path=home / "moto.log", request_log=Path(request_log) if request_log else None
    ) as moto:
        print(f"moto server: {moto.url}")
        moto.set_phase("seed")
        env = prepare_airflow(home, moto.url)
        s3 = seed_local_lake(moto.url)
        outcomes = execute_runs(DEMO_RUNS, env, moto, home / "logs-demo")
        rows = [
            (
                outcome.run.dag_id,
                outcome.run.what,
                outcome.state,
                _describe(run_reports(settings().reports_uri, outcome.run.dag_id, outcome.run_id, s3)),
            )
            for outcome in outcomes
        ]
        moto.set_phase("cli")
        alerts = read_alerts()
        show_recon_commands(env)
        show_gdpr_status(env)
        show_pricing_commands(env)

    print()
    print_table(rows)
    print_alerts(alerts)
    unexpected = [outcome for outcome in outcomes if outcome.state != outcome.run.expect]
    if unexpected:
        print(f"\n{len(unexpected)} run(s) did not end as expected; logs under {home / 'logs-demo'}")
        return 1
    return 0


def read_alerts() -> list[dict]:
    """The alerts the runs sent, from the queue subscribed to the topic (none when alerts are logged
    only)."""
    from dataplatform import aws
    from dataplatform.devstack.seed import ALERT_QUEUE, receive_alerts

    if not settings().alerts.sns_topic_arn:
        return []
    sqs = aws.client("sqs")
    return receive_alerts(sqs, sqs.get_queue_url(QueueName=ALERT_QUEUE)["QueueUrl"])


def print_alerts(alerts: list[dict]) -> None:
    from dataplatform.devstack.seed import ALERT_QUEUE

    print(f"\nalerts the runs sent (SNS topic -> SQS queue {ALERT_QUEUE}): {len(alerts)}")
    for alert in alerts:
        print(f"\n  {alert['subject']}")
        print("\n".join("    " + line for line in alert["message"].splitlines()))

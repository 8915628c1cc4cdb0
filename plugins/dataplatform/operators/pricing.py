"""Airflow side of benchmark pricing (``dataplatform.pricing``): which launches a run prices, one launch
per mapped task, the comparison report, and the cost record of a Spark job run on EMR."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from dataplatform.config import settings

log = logging.getLogger(__name__)


def _pricer():
    from dataplatform import aws
    from dataplatform.pricing.pricer import Pricer
    from dataplatform.pricing.prices import PriceStore

    config = settings().pricing
    store = PriceStore(config.price_cache_uri, config.price_cache_hours, s3=aws.client("s3"))
    return Pricer(config, aws.client_in, aws.client("dynamodb"), store=store)


def check_launch_ids(value: Any) -> list[str]:
    """The ``launch_ids`` param as a list of ids (the CLI's comma-separated string accepted), each a
    DynamoDB key the workflow manager could have written: 1-256 characters (the Param schema's bound), no
    control characters. Checked before any AWS call."""
    from dataplatform.pricing.launches import LaunchRecordError, check_launch_id

    if value in (None, "", []):
        return []
    if isinstance(value, str):
        value = [launch_id.strip() for launch_id in value.split(",") if launch_id.strip()]
    if not isinstance(value, list):
        raise AirflowFailException(
            f"param launch_ids must be a list of launch ids, got {type(value).__name__}"
        )
    try:
        for launch_id in value:
            check_launch_id(launch_id)
    except LaunchRecordError as exc:
        raise AirflowFailException(f"param launch_ids: {exc} (nothing was priced)") from None
    return list(dict.fromkeys(value))


def select_launches(params: dict) -> list[str]:
    """The launch ids this run prices: the ``launch_ids`` param (each must exist and be COMPLETE; an
    already priced one is kept and reported as such), else up to ``batch_size`` COMPLETE launches
    without a total cost, oldest first. Nothing is written here."""
    from dataplatform import aws
    from dataplatform.pricing import launches

    config = settings().pricing
    requested = check_launch_ids(params.get("launch_ids"))
    dynamodb = aws.client("dynamodb")
    launches.ensure_launches_table(dynamodb, config.launches_table)
    if requested:
        problems = []
        for launch_id in requested:
            launch = launches.get_launch(dynamodb, config.launches_table, launch_id)
            if launch is None:
                problems.append(f"{launch_id}: not in {config.launches_table}")
            elif launch.get("status") != launches.COMPLETE:
                problems.append(f"{launch_id}: status {launch.get('status')}, not COMPLETE")
        if problems:
            raise AirflowFailException("param launch_ids: " + "; ".join(problems) + " (nothing was priced)")
        log.info("pricing the %d launch(es) of the launch_ids param", len(requested))
        return requested
    selected = [
        launch["launch_id"]
        for launch in launches.unpriced_launches(dynamodb, config.launches_table, config.batch_size)
    ]
    log.info(
        "%d COMPLETE launch(es) without a total cost (batch size %d): %s",
        len(selected),
        config.batch_size,
        ", ".join(selected[:20]) + (" ..." if len(selected) > 20 else ""),
    )
    return selected


def price_launch(launch_id: str) -> dict:
    """One launch, priced and written back (or its pricing error recorded: the task still succeeds, the
    report lists it, and the next run retries it)."""
    outcome = _pricer().price_and_record(launch_id)
    log.info("launch %s: %s", launch_id, outcome["outcome"])
    return outcome


def build_report(selected: list[str], outcomes: list[dict] | None, context) -> dict:
    """This run's outcomes plus the comparison over the last ``report_period_days``: CSV and PNG chart
    under ``reports_uri``, linked from the run's JSON report. Fails (after writing the report) when a
    selected launch has no outcome: its task failed for a reason other than a pricing error."""
    from dataplatform import aws
    from dataplatform.operators.iceberg import publish_report
    from dataplatform.pricing import launches
    from dataplatform.pricing.pricer import ALREADY_PRICED, FAILED, PRICED
    from dataplatform.pricing.report import compare, write_comparison
    from dataplatform.reports import report_key

    config = settings().pricing
    s3 = aws.client("s3")
    dynamodb = aws.client("dynamodb")
    outcomes = [outcome for outcome in (outcomes or []) if outcome]
    end = datetime.now(UTC)
    start = end - timedelta(days=config.report_period_days)
    completed = launches.completed_launches(
        dynamodb, config.launches_table, start.isoformat(), end.isoformat()
    )
    comparison = compare(completed, start, end, by=config.report_group_by)
    key_prefix = report_key(context["dag"].dag_id, context["run_id"], "benchmark_comparison")[: -len(".json")]
    links = write_comparison(comparison, settings().reports_uri, key_prefix, s3)
    counts = {
        name: sum(1 for o in outcomes if o["outcome"] == name) for name in (PRICED, ALREADY_PRICED, FAILED)
    }
    failed = [
        {"launch_id": o["launch_id"], "reason": o.get("reason")} for o in outcomes if o["outcome"] == FAILED
    ]
    priced_total = sum((Decimal(o["total_cost"]) for o in outcomes if o["outcome"] == PRICED), Decimal(0))
    summary = (
        f"priced {counts[PRICED]} launch(es) ({priced_total} USD), {counts[ALREADY_PRICED]} already priced, "
        f"{counts[FAILED]} not priceable"
        + "".join(f"\n  {f['launch_id']}: {f['reason']}" for f in failed)
        + f"\ncomparison of {comparison.launches} launch(es) over {comparison.period}: {links['csv']}, {links['png']}"
    )
    log.info("%s", summary)
    report = {
        "summary": summary,
        "counts": counts,
        "launches": outcomes,
        "failed": failed,
        "comparison": comparison.summary(),
        "comparison_csv": links["csv"],
        "comparison_chart": links["png"],
    }
    missing = sorted(set(selected) - {outcome["launch_id"] for outcome in outcomes})
    report["task_failures"] = missing
    report = publish_report(context, "benchmark_pricing", report, s3)
    if missing:
        raise AirflowException(
            f"{len(missing)} launch(es) failed in price_launch (see those tasks' logs): {', '.join(missing[:20])}"
        )
    return report


def record_spark_job_cost(
    context,
    backend: str,
    region: str,
    job_name: str,
    job_task_id: str | None = None,
    cluster_id: str | None = None,
    application_id: str | None = None,
    sizing=None,
) -> dict:
    """The cost record of the Spark job whose group this task ends (``spark_job_costs``, one per job and
    run: a retry writes nothing new). A job that cannot be priced gets a record with ``pricing_error``
    instead of a cost: the job's own outcome decides the run's state, not its bill.

    ``job_task_id`` (a step on a long-lived cluster, an EMR Serverless job run): the task whose XCom names
    the step ids or job run id; a task that failed returned none, and then they are looked up by
    ``job_name`` among the ones created since this DAG run started. Without it (a transient cluster) the
    whole cluster is the job's."""
    from dataplatform import aws
    from dataplatform.pricing import jobs
    from dataplatform.pricing.pricer import price_catalog, source_label, spot_history
    from dataplatform.pricing.prices import PriceStore
    from dataplatform.pricing.resources import PricingError

    config = settings().pricing
    ti = context["ti"]
    record = {
        "run_key": f"{ti.dag_id}/{ti.run_id}",
        "job_name": ti.task_id.rsplit(".", 1)[0],
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "region": region,
    }
    client = aws.client_in
    catalog = price_catalog(
        config, client, PriceStore(config.price_cache_uri, config.price_cache_hours, aws.client("s3"))
    )
    job_output = ti.xcom_pull(task_ids=job_task_id) if job_task_id else None
    since = context["dag_run"].start_date
    try:
        if backend == "emr":
            if not cluster_id:
                raise PricingError("no EMR cluster id (the cluster was not created)")
            emr = client("emr", region)
            step_ids: list[str] = []
            if job_task_id:
                step_ids = job_output or jobs.find_step_ids(emr, cluster_id, job_name, since)
            cost = jobs.emr_job_cost_record(
                emr, cluster_id, catalog, spot_history(config, client, region), region, step_ids
            )
        else:
            serverless = client("emr-serverless", region)
            job_run_id = job_output or jobs.find_job_run_id(serverless, application_id, job_name, since)
            cost = jobs.serverless_job_cost_record(
                serverless, application_id, job_run_id, catalog, region, sizing
            )
        record.update(cost, price_source=source_label(config), price_date=catalog.price_date())
        log.info(
            "%s cost %s USD%s",
            record["job_name"],
            cost["total_cost"],
            " (estimated)" if cost["estimated"] else "",
        )
    except PricingError as exc:
        log.warning("%s: no cost recorded: %s", record["job_name"], exc)
        record.update(backend=backend, pricing_error=str(exc))
    dynamodb = aws.client("dynamodb")
    jobs.ensure_job_costs_table(dynamodb, config.job_costs_table)
    if not jobs.write_job_cost(dynamodb, config.job_costs_table, record):
        log.info("%s already has a cost record for this run: nothing written", record["job_name"])
    return record

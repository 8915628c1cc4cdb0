"""Cost records for the platform's own Spark jobs (reconciliation, Iceberg maintenance, GDPR erasure) on
EMR on EC2 and EMR Serverless: one DynamoDB item per job run in ``spark_job_costs``.

- EMR on EC2: every instance of the cluster (ListInstances: type, market, creation and end time), or
  only the part of each instance's life inside a step's interval when the step ran on a long-lived
  cluster, priced at EC2 (On-Demand or Spot) plus the EMR surcharge. When ListInstances has nothing
  (a cluster whose instance records are gone), the instance fleets' or groups' target capacity over the
  cluster's life is priced instead and the record says ``estimated``.
- EMR Serverless: GetJobRun's ``billedResourceUtilization`` (vCPU-hours, memory GB-hours and storage
  GB-hours, with the per-worker minimum and the free storage already applied) at the application's
  architecture's rates. The API can report it a few seconds after the run ends; until then (and where
  it never does, as on moto) the job's sizing times its duration is priced, with the 1-minute minimum per
  worker and the free 20 GB, and the record says ``estimated``.

Local Spark runs are not billed and get no record.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from dataplatform.dynamodb import ensure_table, error_code, key, to_item
from dataplatform.pricing.costs import (
    CURRENCY,
    EmrInstanceUsage,
    EmrServerlessUsage,
    emr_cluster_cost,
    emr_serverless_cost,
    money,
)
from dataplatform.pricing.prices import PriceCatalog, ec2_instance_key
from dataplatform.pricing.resources import Interval, PricingError

log = logging.getLogger(__name__)

SERVERLESS_MINIMUM_WORKER_HOURS = Decimal(1) / Decimal(60)


def ensure_job_costs_table(dynamodb: Any, table: str) -> bool:
    return ensure_table(dynamodb, table, key("run_key", "job_name"), ["run_key", "job_name"])


def write_job_cost(dynamodb: Any, table: str, record: dict[str, Any]) -> bool:
    """Put the record unless this job of this run has one already (a retried task writes nothing)."""
    try:
        dynamodb.put_item(
            TableName=table,
            Item=to_item(record),
            ConditionExpression="attribute_not_exists(run_key)",
        )
    except ClientError as exc:
        if error_code(exc) != "ConditionalCheckFailedException":
            raise
        return False
    return True


# --- EMR on EC2 ---------------------------------------------------------------------------------------


def _interval(timeline: dict[str, Any], now: datetime) -> Interval | None:
    start = timeline.get("CreationDateTime")
    if start is None:
        return None
    return Interval(start, timeline.get("EndDateTime") or now)


def emr_instances(emr: Any, cluster_id: str, window: Interval | None = None) -> list[EmrInstanceUsage]:
    """The cluster's instances from ListInstances, each clipped to ``window`` (a step's run) if given."""
    now = datetime.now(UTC)
    zone = (
        emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
        .get("Ec2InstanceAttributes", {})
        .get("Ec2AvailabilityZone", "")
    )
    found = []
    for page in emr.get_paginator("list_instances").paginate(ClusterId=cluster_id):
        for instance in page.get("Instances", []):
            interval = _interval(instance.get("Status", {}).get("Timeline", {}), now)
            if interval is not None and window is not None:
                interval = interval.clip(window)
            if interval is None:
                continue
            found.append(
                EmrInstanceUsage(
                    instance.get("Ec2InstanceId") or instance["Id"],
                    instance["InstanceType"],
                    instance.get("Market", "ON_DEMAND"),
                    zone,
                    interval,
                )
            )
    return found


def emr_capacity_estimate(
    emr: Any, cluster_id: str, catalog: PriceCatalog, region: str, window: Interval | None = None
) -> list[EmrInstanceUsage]:
    """Instances implied by the fleets' target capacities or the groups' counts, for the cluster's whole
    life (clipped to ``window``). A fleet lists several types and EMR's ``lowest-price`` strategy takes
    the cheapest per unit of capacity: so does the estimate, among the types that have a price."""
    cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    interval = _interval(cluster.get("Status", {}).get("Timeline", {}), datetime.now(UTC))
    if interval is not None and window is not None:
        interval = interval.clip(window)
    if interval is None:
        return []
    zone = cluster.get("Ec2InstanceAttributes", {}).get("Ec2AvailabilityZone", "")
    estimated: list[EmrInstanceUsage] = []
    if cluster.get("InstanceCollectionType") == "INSTANCE_FLEET":
        for fleet in emr.list_instance_fleets(ClusterId=cluster_id).get("InstanceFleets", []):
            instance_type, weight = _cheapest_per_unit(fleet, catalog, region)
            for market, capacity in (
                ("ON_DEMAND", fleet.get("TargetOnDemandCapacity", 0)),
                ("SPOT", fleet.get("TargetSpotCapacity", 0)),
            ):
                count = math.ceil(capacity / weight)
                estimated.extend(
                    EmrInstanceUsage(
                        f"{fleet['Id']}-{market.lower()}-{n}", instance_type, market, zone, interval
                    )
                    for n in range(count)
                )
    else:
        for group in emr.list_instance_groups(ClusterId=cluster_id).get("InstanceGroups", []):
            count = group.get("RunningInstanceCount") or group.get("RequestedInstanceCount", 0)
            estimated.extend(
                EmrInstanceUsage(
                    f"{group['Id']}-{n}",
                    group["InstanceType"],
                    group.get("Market", "ON_DEMAND"),
                    zone,
                    interval,
                )
                for n in range(count)
            )
    return estimated


def _cheapest_per_unit(fleet: dict[str, Any], catalog: PriceCatalog, region: str) -> tuple[str, int]:
    priced = []
    for spec in fleet.get("InstanceTypeSpecifications") or []:
        try:
            hourly = catalog.price(ec2_instance_key(spec["InstanceType"], region)).usd
        except PricingError:
            continue
        weight = spec.get("WeightedCapacity") or 1
        priced.append((hourly / weight, spec["InstanceType"], weight))
    if not priced:
        types = [spec["InstanceType"] for spec in fleet.get("InstanceTypeSpecifications") or []]
        raise PricingError(
            f"EMR instance fleet {fleet.get('Name', fleet['Id'])}: no price for any of {types}"
        )
    _, instance_type, weight = min(priced)
    return instance_type, weight


def find_step_ids(emr: Any, cluster_id: str, step_name: str, since: datetime) -> list[str]:
    """The cluster's steps called ``step_name`` created since ``since`` (the DAG run's start)."""
    found = []
    for page in emr.get_paginator("list_steps").paginate(ClusterId=cluster_id):
        for step in page.get("Steps", []):
            created = step.get("Status", {}).get("Timeline", {}).get("CreationDateTime")
            if step.get("Name") == step_name and created is not None and created >= since:
                found.append(step["Id"])
    if not found:
        raise PricingError(
            f"EMR cluster {cluster_id} has no step {step_name!r} created since {since.isoformat()}"
        )
    return found


def step_window(emr: Any, cluster_id: str, step_ids: Sequence[str]) -> Interval | None:
    """From the first step's start to the last step's end (now while one runs); None before any started."""
    now = datetime.now(UTC)
    starts, ends = [], []
    for step_id in step_ids:
        timeline = emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]["Status"].get(
            "Timeline", {}
        )
        if timeline.get("StartDateTime"):
            starts.append(timeline["StartDateTime"])
            ends.append(timeline.get("EndDateTime") or now)
    return Interval(min(starts), max(ends)) if starts else None


def emr_job_cost_record(
    emr: Any,
    cluster_id: str,
    catalog: PriceCatalog,
    spot_history,
    region: str,
    step_ids: Sequence[str] = (),
) -> dict[str, Any]:
    """The cost of a transient cluster (``step_ids`` empty) or of a long-lived cluster while the steps ran."""
    window = step_window(emr, cluster_id, step_ids) if step_ids else None
    instances = emr_instances(emr, cluster_id, window)
    estimated = not instances
    if estimated:
        instances = emr_capacity_estimate(emr, cluster_id, catalog, region, window)
    if not instances:
        raise PricingError(f"EMR cluster {cluster_id} reports no instances and no capacity to price")
    cost = emr_cluster_cost(instances, catalog, spot_history, region)
    log.info(
        "EMR cluster %s: %d instances, %.2f instance-hours: EC2 %s + EMR %s USD%s",
        cluster_id,
        len(instances),
        cost.instance_hours,
        cost.ec2_cost,
        cost.emr_cost,
        " (estimated from capacity)" if estimated else "",
    )
    return {
        "backend": "emr",
        "resource_id": cluster_id,
        "instances": len(instances),
        "instance_hours": money(cost.instance_hours),
        "ec2_cost": money(cost.ec2_cost),
        "emr_cost": money(cost.emr_cost),
        "total_cost": money(cost.total_cost),
        "currency": CURRENCY,
        "estimated": estimated,
    }


# --- EMR Serverless -----------------------------------------------------------------------------------


def _memory_gb(value: str) -> Decimal:
    """Spark memory strings (``4g``, ``512m``) in GB, the unit EMR Serverless bills."""
    number, unit = Decimal(value[:-1]), value[-1].lower()
    return (
        number
        * {"k": Decimal(1) / (1024 * 1024), "m": Decimal(1) / 1024, "g": Decimal(1), "t": Decimal(1024)}[unit]
    )


def find_job_run_id(serverless: Any, application_id: str, name: str, since: datetime) -> str:
    """The newest job run called ``name`` on the application created since ``since`` (the DAG run's start)."""
    runs = [
        run
        for page in serverless.get_paginator("list_job_runs").paginate(
            applicationId=application_id, createdAtAfter=since
        )
        for run in page.get("jobRuns", [])
        if run.get("name") == name
    ]
    if not runs:
        raise PricingError(
            f"EMR Serverless application {application_id} has no job run {name!r} created since {since.isoformat()}"
        )
    return max(runs, key=lambda run: run["createdAt"])["id"]


def serverless_usage_estimate(job_run: dict[str, Any], sizing, architecture: str) -> EmrServerlessUsage:
    """Driver plus executors (``SparkSizing``; 1 executor when dynamic allocation decides) for the run's
    duration, each worker billed at least one minute; the default 20 GB of storage is free."""
    started, ended = (
        job_run.get("startedAt") or job_run.get("createdAt"),
        job_run.get("endedAt") or job_run.get("updatedAt"),
    )
    if not started or not ended:
        raise PricingError(f"EMR Serverless job run {job_run.get('jobRunId')} has no start and end time yet")
    hours = max(Decimal(str(Interval(started, ended).seconds)) / 3600, SERVERLESS_MINIMUM_WORKER_HOURS)
    executors = sizing.executor_instances or 1
    vcpu = Decimal(sizing.driver_cores + executors * sizing.executor_cores)
    memory = _memory_gb(sizing.driver_memory) + executors * _memory_gb(sizing.executor_memory)
    return EmrServerlessUsage(vcpu * hours, memory * hours, Decimal(0), architecture)


def serverless_job_cost_record(
    serverless: Any,
    application_id: str,
    job_run_id: str,
    catalog: PriceCatalog,
    region: str,
    sizing,
) -> dict[str, Any]:
    application = serverless.get_application(applicationId=application_id)["application"]
    architecture = application.get("architecture", "X86_64").lower()
    job_run = serverless.get_job_run(applicationId=application_id, jobRunId=job_run_id)["jobRun"]
    billed = job_run.get("billedResourceUtilization") or {}
    # Reported as absent or as zeros until the service has metered the run (billing has a minimum per
    # worker, so a finished run is never billed zero).
    billed = (
        billed
        if any(float(billed.get(k, 0) or 0) for k in ("vCPUHour", "memoryGBHour", "storageGBHour"))
        else None
    )
    if billed:
        usage = EmrServerlessUsage(
            Decimal(str(billed.get("vCPUHour", 0))),
            Decimal(str(billed.get("memoryGBHour", 0))),
            Decimal(str(billed.get("storageGBHour", 0))),
            architecture,
        )
    else:
        usage = serverless_usage_estimate(job_run, sizing, architecture)
    cost = emr_serverless_cost(usage, catalog, region)
    return {
        "backend": "emr_serverless",
        "resource_id": f"{application_id}/{job_run_id}",
        "architecture": architecture,
        "vcpu_hours": money(usage.vcpu_hours),
        "memory_gb_hours": money(usage.memory_gb_hours),
        "storage_gb_hours": money(usage.storage_gb_hours),
        "vcpu_cost": money(cost.vcpu_cost),
        "memory_cost": money(cost.memory_cost),
        "storage_cost": money(cost.storage_cost),
        "total_cost": money(cost.total_cost),
        "currency": CURRENCY,
        "estimated": not billed,
    }

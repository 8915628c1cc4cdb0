"""What one finished workflow launch used, read from the AWS APIs: the input of the cost functions.

The launch record (written by the workflow manager) names the Batch jobs, any EC2 instances used outside
Batch, the EBS volumes and the FSx for Lustre file system. Batch jobs lead to instances the way the Batch
console does: job -> job queue -> compute environment -> its ECS cluster -> container instances -> EC2
instance ids. Every interval is clipped to the launch's own [started_at, completed_at].

Anything that cannot be found raises ``PricingError`` naming it: a launch is never priced on a partial
list of resources (a missing instance would silently make the launch look cheaper).

Pure boto3: no Airflow import, so the collector runs the same in a task, a script or a test.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from dataplatform.pricing.resources import (
    FileSystemUsage,
    InstanceUsage,
    Interval,
    LaunchUsage,
    PricingError,
    VolumeUsage,
    as_utc,
)

log = logging.getLogger(__name__)

# Per-call limits of the APIs (AWS rejects larger requests; moto does not enforce them).
DESCRIBE_JOBS_LIMIT = 100
DESCRIBE_JOB_QUEUES_LIMIT = 100
DESCRIBE_COMPUTE_ENVIRONMENTS_LIMIT = 100
DESCRIBE_CONTAINER_INSTANCES_LIMIT = 100
DESCRIBE_INSTANCES_LIMIT = 1000
# DescribeVolumes has no documented cap on VolumeIds; 200 keeps the query string (and a filter's value
# list, which EC2 caps at 200) well inside the limits.
DESCRIBE_VOLUMES_LIMIT = 200

INSTANCE_NOT_FOUND = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})
VOLUME_NOT_FOUND = frozenset({"InvalidVolume.NotFound", "InvalidVolumeID.Malformed", "InvalidParameterValue"})
# The states in which StateTransitionReason carries the time the instance stopped running.
ENDED_STATES = frozenset({"shutting-down", "terminated", "stopping", "stopped"})
# Only these volume types bill provisioned IOPS / throughput; gp2, st1, sc1 and standard report an IOPS
# figure too (a baseline), which must not be priced.
TYPES_BILLING_IOPS = frozenset({"gp3", "io1", "io2"})
TYPES_BILLING_THROUGHPUT = frozenset({"gp3"})
# "User initiated (2026-12-01 10:00:00 GMT)": AWS writes GMT, moto UTC.
_TRANSITION_TIME = re.compile(r"\((\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (?:GMT|UTC)\)")


def collect_launch_usage(launch: dict, clients: Any) -> LaunchUsage:
    """Everything ``launch`` (a launch record as plain values) used, clipped to its start and end.

    ``clients`` has ``batch``, ``ecs``, ``ec2`` and ``fsx`` boto3 clients for the launch's region.
    Raises ``PricingError`` when the record is incomplete, a resource it names does not exist, or no EC2
    instance is found at all."""
    launch_id = launch.get("launch_id") or "<no launch_id>"
    window = launch_interval(launch)
    region = launch_region(launch, clients.ec2)

    batch = BatchInstances(instance_ids=())
    if launch.get("batch_job_ids"):
        batch = batch_instance_ids(clients.batch, clients.ecs, launch["batch_job_ids"])
    instance_ids = _unique([*batch.instance_ids, *(launch.get("instance_ids") or [])])
    instances = instance_usages(clients.ec2, instance_ids, window, launch_id) if instance_ids else []
    if not instances:
        detail = (
            f" ({len(instance_ids)} described, none ran inside the launch window)" if instance_ids else ""
        )
        raise PricingError(f"no EC2 instances found for launch {launch_id} in {region}{detail}")

    volumes = volume_usages(clients.ec2, launch.get("volume_ids") or [], window)
    volumes += attached_volume_usages(clients.ec2, [i.instance_id for i in instances], volumes, window)
    file_systems = []
    if launch.get("fsx_file_system_id"):
        file_systems = [file_system_usage(clients.fsx, launch["fsx_file_system_id"], window)]

    spot = sum(1 for i in instances if i.lifecycle == "spot")
    log.info(
        "launch %s: %s -> %s -> %s (%d spot), %s, %s",
        launch_id,
        _count(batch.jobs, "Batch job"),
        _count(batch.compute_environments, "compute environment"),
        _count(len(instances), "instance"),
        spot,
        _count(len(volumes), "volume"),
        _count(len(file_systems), "file system"),
    )
    return LaunchUsage(
        launch_id=launch_id,
        region=region,
        interval=window,
        instances=tuple(instances),
        volumes=tuple(volumes),
        file_systems=tuple(file_systems),
    )


# -- the launch record ----------------------------------------------------------------------------------


def launch_interval(launch: dict) -> Interval:
    """[started_at, completed_at] of the record; PricingError naming a missing or unparseable field."""
    start = _record_time(launch, "started_at")
    end = _record_time(launch, "completed_at")
    if end < start:
        raise PricingError(
            f"launch {launch.get('launch_id')}: completed_at {end} is before started_at {start}"
        )
    return Interval(start, end)


def _record_time(launch: dict, name: str) -> datetime:
    value = launch.get(name)
    if not value:
        raise PricingError(f"launch {launch.get('launch_id')}: {name} is missing")
    try:
        return as_utc(value if isinstance(value, datetime) else str(value))
    except ValueError:
        raise PricingError(
            f"launch {launch.get('launch_id')}: {name} {value!r} is not an ISO-8601 time"
        ) from None


def launch_region(launch: dict, ec2: Any) -> str:
    """The record's region, which must be the clients' region: asked in another region, every resource
    would look missing."""
    client_region = ec2.meta.region_name
    region = launch.get("region") or client_region
    if region != client_region:
        raise PricingError(
            f"launch {launch.get('launch_id')} ran in {region} but the clients are for {client_region}"
        )
    return region


# -- Batch -> ECS -> EC2 instance ids -------------------------------------------------------------------


@dataclass
class BatchInstances:
    """The EC2 instance ids behind a launch's Batch jobs, and the counts for the log line."""

    instance_ids: tuple[str, ...]
    jobs: int = 0
    compute_environments: int = 0


def batch_instance_ids(batch: Any, ecs: Any, job_ids: list[str]) -> BatchInstances:
    """Instance ids of the container instances the jobs ran on.

    A job attempt that names its container instance (AWS does) restricts the job to that instance.
    Without one (moto writes "TBD"; a job that never started has no attempt) the job is charged with all
    container instances of its compute environments' clusters: a launch's compute environment is its own,
    so those are the instances it kept running."""
    jobs = describe_jobs(batch, job_ids)
    topology = BatchTopology.of_jobs(batch, jobs)
    resolver = ContainerInstances(ecs)
    instance_ids: list[str] = []
    for job in jobs:
        clusters = topology.clusters_of_queue(job["jobQueue"])
        named = job_container_instance_arns(job)
        if named:
            instance_ids += resolver.named(clusters, named, job["jobId"])
        else:
            for cluster in clusters:
                instance_ids += resolver.all_in(cluster)
    return BatchInstances(
        instance_ids=tuple(_unique(instance_ids)),
        jobs=len(jobs),
        compute_environments=len(topology.cluster_of_environment),
    )


def describe_jobs(batch: Any, job_ids: list[str]) -> list[dict]:
    """DescribeJobs in calls of at most 100 ids; ids it does not return are an error naming them."""
    wanted = _unique(job_ids)
    jobs = [
        job
        for chunk in _chunks(wanted, DESCRIBE_JOBS_LIMIT)
        for job in batch.describe_jobs(jobs=chunk)["jobs"]
    ]
    found = {job["jobId"] for job in jobs} | {job.get("jobArn") for job in jobs}
    missing = [job_id for job_id in wanted if job_id not in found]
    if missing:
        raise PricingError(f"Batch jobs not found: {', '.join(missing)}")
    return jobs


def job_container_instance_arns(job: dict) -> list[str]:
    """The container instances the job's attempts ran on, when Batch names them (an ARN, not "TBD")."""
    arns = [attempt.get("container", {}).get("containerInstanceArn") for attempt in job.get("attempts", [])]
    arns.append(job.get("container", {}).get("containerInstanceArn"))
    return _unique(arn for arn in arns if arn and arn.startswith("arn:"))


@dataclass
class BatchTopology:
    """Queue -> compute environments -> ECS cluster, each described once per launch."""

    environments_of_queue: dict[str, list[str]] = field(default_factory=dict)
    cluster_of_environment: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_jobs(cls, batch: Any, jobs: list[dict]) -> BatchTopology:
        topology = cls()
        queues = _unique(job["jobQueue"] for job in jobs)
        for queue in _describe_batch(
            batch.describe_job_queues, "jobQueues", queues, DESCRIBE_JOB_QUEUES_LIMIT
        ):
            environments = [entry["computeEnvironment"] for entry in queue.get("computeEnvironmentOrder", [])]
            # Jobs name their queue by ARN; index the name too, which is what DescribeJobQueues accepts.
            topology.environments_of_queue[queue["jobQueueArn"]] = environments
            topology.environments_of_queue[queue["jobQueueName"]] = environments
        missing = [queue for queue in queues if queue not in topology.environments_of_queue]
        if missing:
            raise PricingError(f"Batch job queues not found: {', '.join(missing)}")

        environment_ids = _unique(e for q in queues for e in topology.environments_of_queue[q])
        described = _describe_batch(
            batch.describe_compute_environments,
            "computeEnvironments",
            environment_ids,
            DESCRIBE_COMPUTE_ENVIRONMENTS_LIMIT,
        )
        by_id: dict[str, str] = {}
        for environment in described:
            if not environment.get("ecsClusterArn"):
                raise PricingError(
                    f"compute environment {environment['computeEnvironmentArn']} has no ECS cluster "
                    "(EKS compute environments are not priced)"
                )
            by_id[environment["computeEnvironmentArn"]] = environment["ecsClusterArn"]
            by_id[environment["computeEnvironmentName"]] = environment["ecsClusterArn"]
        missing = [environment for environment in environment_ids if environment not in by_id]
        if missing:
            raise PricingError(f"Batch compute environments not found: {', '.join(missing)}")
        topology.cluster_of_environment = {environment: by_id[environment] for environment in environment_ids}
        return topology

    def clusters_of_queue(self, queue: str) -> list[str]:
        return _unique(self.cluster_of_environment[e] for e in self.environments_of_queue[queue])


class ContainerInstances:
    """ECS container instance ARN -> EC2 instance id, each cluster listed at most once per launch."""

    def __init__(self, ecs: Any):
        self._ecs = ecs
        self._listed: dict[str, list[str]] = {}  # cluster -> EC2 instance ids of all its container instances
        self._described: dict[str, str] = {}  # container instance ARN -> EC2 instance id

    def all_in(self, cluster: str) -> list[str]:
        if cluster not in self._listed:
            pages = self._ecs.get_paginator("list_container_instances").paginate(cluster=cluster)
            arns = [arn for page in pages for arn in page["containerInstanceArns"]]
            self._listed[cluster] = list(self._describe(cluster, arns).values())
        return self._listed[cluster]

    def named(self, clusters: list[str], arns: list[str], job_id: str) -> list[str]:
        """The instances behind ``arns``, looked up in the job's clusters (a queue can feed several compute
        environments, and a short ARN does not say which cluster it belongs to)."""
        remaining = [arn for arn in arns if arn not in self._described]
        for cluster in clusters:
            if not remaining:
                break
            found = self._describe(cluster, remaining)
            remaining = [arn for arn in remaining if arn not in found]
        if remaining:
            raise PricingError(f"Batch job {job_id}: container instances not found: {', '.join(remaining)}")
        return [self._described[arn] for arn in arns]

    def _describe(self, cluster: str, arns: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for chunk in _chunks(arns, DESCRIBE_CONTAINER_INSTANCES_LIMIT):
            response = self._ecs.describe_container_instances(cluster=cluster, containerInstances=chunk)
            for instance in response["containerInstances"]:
                found[instance["containerInstanceArn"]] = instance["ec2InstanceId"]
        self._described.update(found)
        return found


def _describe_batch(call: Callable[..., dict], key: str, names: list[str], limit: int) -> list[dict]:
    """DescribeJobQueues / DescribeComputeEnvironments: ``key`` names both the request's list and the
    response's."""
    return [item for chunk in _chunks(names, limit) for item in call(**{key: chunk})[key]]


# -- EC2 instances ---------------------------------------------------------------------------------------


def instance_usages(
    ec2: Any, instance_ids: list[str], window: Interval, launch_id: str
) -> list[InstanceUsage]:
    """One usage per instance that ran inside ``window``; instances that did not are dropped (logged)."""
    usages = []
    for instance in describe_instances(ec2, instance_ids):
        usage = instance_usage(instance, window)
        if usage is None:
            log.info(
                "launch %s: instance %s (%s) did not run between %s and %s: not charged",
                launch_id,
                instance["InstanceId"],
                instance["InstanceType"],
                window.start.isoformat(),
                window.end.isoformat(),
            )
            continue
        usages.append(usage)
    return usages


def describe_instances(ec2: Any, instance_ids: list[str]) -> list[dict]:
    """DescribeInstances in calls of at most 1,000 ids. One unknown id fails the whole call, naming only
    the first: the ids of a failed chunk are then asked one by one to name every missing one."""

    def describe(chunk: list[str]) -> list[dict]:
        pages = ec2.get_paginator("describe_instances").paginate(InstanceIds=chunk)
        return [i for page in pages for reservation in page["Reservations"] for i in reservation["Instances"]]

    return _describe_all_or_raise(
        describe, instance_ids, DESCRIBE_INSTANCES_LIMIT, INSTANCE_NOT_FOUND, "EC2 instances"
    )


def instance_usage(instance: dict, window: Interval) -> InstanceUsage | None:
    """The instance's running time clipped to ``window``; None when it did not run inside it."""
    end = instance_end_time(instance) or window.end
    start = as_utc(instance["LaunchTime"])
    if end <= start:
        return None
    running = Interval(start, end).clip(window)
    if running is None:
        return None
    return InstanceUsage(
        instance_id=instance["InstanceId"],
        instance_type=instance["InstanceType"],
        lifecycle="spot" if instance.get("InstanceLifecycle") == "spot" else "on-demand",
        availability_zone=instance["Placement"]["AvailabilityZone"],
        interval=running,
    )


def instance_end_time(instance: dict) -> datetime | None:
    """When a stopped or terminated instance stopped running; None while it runs.

    EC2 reports that time only inside StateTransitionReason. An ended instance whose reason carries no
    time (seen for some service-initiated terminations) is charged until the launch ended: an upper bound
    rather than nothing."""
    if instance.get("State", {}).get("Name") not in ENDED_STATES:
        return None
    end = parse_transition_time(instance.get("StateTransitionReason", ""))
    if end is None:
        log.warning(
            "instance %s is %s without a time in StateTransitionReason %r: charged until the launch ended",
            instance.get("InstanceId"),
            instance["State"]["Name"],
            instance.get("StateTransitionReason"),
        )
    return end


def parse_transition_time(reason: str) -> datetime | None:
    """``User initiated (2026-12-01 10:00:00 GMT)`` -> 2026-12-01 10:00:00 UTC; None without a time."""
    match = _TRANSITION_TIME.search(reason or "")
    if not match:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


# -- EBS volumes -----------------------------------------------------------------------------------------


def volume_usages(ec2: Any, volume_ids: list[str], window: Interval) -> list[VolumeUsage]:
    """The volumes the record lists; an unknown one is an error naming it."""

    def describe(chunk: list[str]) -> list[dict]:
        return ec2.describe_volumes(VolumeIds=chunk)["Volumes"]

    volumes = _describe_all_or_raise(
        describe, _unique(volume_ids), DESCRIBE_VOLUMES_LIMIT, VOLUME_NOT_FOUND, "EBS volumes"
    )
    return [usage for usage in (volume_usage(volume, window) for volume in volumes) if usage]


def attached_volume_usages(
    ec2: Any, instance_ids: list[str], known: list[VolumeUsage], window: Interval
) -> list[VolumeUsage]:
    """Volumes still attached to the launch's instances that the record does not list (root volumes,
    scratch volumes Batch attached). Best effort: the record's list is the contract, so a failed lookup
    here is logged, not fatal."""
    listed = {usage.volume_id for usage in known}
    usages = []
    for chunk in _chunks(instance_ids, DESCRIBE_VOLUMES_LIMIT):
        try:
            pages = ec2.get_paginator("describe_volumes").paginate(
                Filters=[{"Name": "attachment.instance-id", "Values": chunk}]
            )
            volumes = [volume for page in pages for volume in page["Volumes"]]
        except ClientError as exc:
            log.warning("volumes attached to %s not described: %s", ", ".join(chunk), exc)
            continue
        for volume in volumes:
            if volume["VolumeId"] in listed:
                continue
            listed.add(volume["VolumeId"])
            usage = volume_usage(volume, window)
            if usage:
                usages.append(usage)
    return usages


def volume_usage(volume: dict, window: Interval) -> VolumeUsage | None:
    """A volume is charged from its creation (or the launch start, if later) to the launch end; None for
    one created after the launch ended."""
    start = max(as_utc(volume["CreateTime"]), window.start)
    if start >= window.end:
        log.info("volume %s was created after the launch ended: not charged", volume["VolumeId"])
        return None
    volume_type = volume["VolumeType"]
    return VolumeUsage(
        volume_id=volume["VolumeId"],
        volume_type=volume_type,
        size_gib=int(volume["Size"]),
        interval=Interval(start, window.end),
        iops=_int_or_none(volume.get("Iops")) if volume_type in TYPES_BILLING_IOPS else None,
        throughput_mibps=_int_or_none(volume.get("Throughput"))
        if volume_type in TYPES_BILLING_THROUGHPUT
        else None,
    )


# -- FSx for Lustre --------------------------------------------------------------------------------------


def file_system_usage(fsx: Any, file_system_id: str, window: Interval) -> FileSystemUsage:
    """The launch's FSx for Lustre file system, charged from its creation (or the launch start) to the
    launch end."""
    try:
        found = fsx.describe_file_systems(FileSystemIds=[file_system_id])["FileSystems"]
    except ClientError as exc:
        if _error_code(exc) != "FileSystemNotFound":
            raise
        found = []
    # AWS answers FileSystemNotFound; moto answers an empty list.
    if not found:
        raise PricingError(f"FSx file system not found: {file_system_id}")
    file_system = found[0]
    if file_system.get("FileSystemType") != "LUSTRE":
        raise PricingError(
            f"FSx file system {file_system_id} is {file_system.get('FileSystemType')}, not LUSTRE: not priced"
        )
    lustre = file_system.get("LustreConfiguration") or {}
    deployment_type = lustre.get("DeploymentType")
    if not deployment_type:
        raise PricingError(f"FSx file system {file_system_id} has no Lustre DeploymentType")
    # AWS always reports CreationTime; moto does not, and then the launch start stands in.
    created = file_system.get("CreationTime")
    start = max(as_utc(created), window.start) if created else window.start
    if start >= window.end:
        raise PricingError(f"FSx file system {file_system_id} was created after launch end {window.end}")
    return FileSystemUsage(
        file_system_id=file_system_id,
        deployment_type=deployment_type,
        storage_type=file_system.get("StorageType") or "SSD",
        storage_capacity_gib=int(file_system["StorageCapacity"]),
        interval=Interval(start, window.end),
        throughput_per_tib=(
            None
            if deployment_type.startswith("SCRATCH")
            else _int_or_none(lustre.get("PerUnitStorageThroughput"))
        ),
    )


# -- helpers ---------------------------------------------------------------------------------------------


def _describe_all_or_raise(
    describe: Callable[[list[str]], list[dict]],
    ids: list[str],
    limit: int,
    not_found_codes: frozenset[str],
    what: str,
) -> list[dict]:
    """``describe`` over chunks of ``ids``. EC2 fails a whole call for one unknown id and names only one,
    so a chunk that fails that way is retried id by id to name every missing one in the error."""
    found: list[dict] = []
    for chunk in _chunks(_unique(ids), limit):
        try:
            found += describe(chunk)
        except ClientError as exc:
            if _error_code(exc) not in not_found_codes:
                raise
            missing = _missing_ids(describe, chunk, not_found_codes)
            raise PricingError(f"{what} not found: {', '.join(missing or chunk)}") from exc
    return found


def _missing_ids(
    describe: Callable[[list[str]], list[dict]], ids: list[str], not_found_codes: frozenset[str]
) -> list[str]:
    missing = []
    for resource_id in ids:
        try:
            describe([resource_id])
        except ClientError as exc:
            if _error_code(exc) not in not_found_codes:
                raise
            missing.append(resource_id)
    return missing


def _error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for index in range(0, len(items), size):
        yield items[index : index + size]


def _unique(items: Iterable[str]) -> list[str]:
    """``items`` without repeats, in first-seen order (deterministic requests and log lines)."""
    return list(dict.fromkeys(items))


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)

"""Demo workflow launches on a moto server, for ``make demo``, the tests and the DAG tests.

Every launch record points at real moto resources, built the way they exist in AWS: EC2 instances (some
Spot) registered as container instances of an unmanaged Batch compute environment's ECS cluster (what
the ECS agent does when an instance boots), a job queue and submitted jobs, EBS volumes and an FSx for
Lustre file system. The collector then walks job -> queue -> compute environment -> cluster -> instances
exactly as it does in AWS.

moto stamps every resource with the real clock and cannot be told otherwise, so the demo launches run
for seconds, not hours: the costs are small but come from the same code path.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3

from dataplatform.pricing.launches import ensure_launches_table, put_launch

log = logging.getLogger(__name__)

AMI_ID = "ami-0b5eea76982371e91"  # moto runs any image id
JOB_DEFINITION = "genomics-step"
# Batch instances register with their cluster a little after they boot, and the workflow manager creates
# the launch a little before that: created_at is this much before the first instance started.
PREPARING = timedelta(minutes=2)
# LaunchTime and the time in StateTransitionReason have whole seconds: instances run at least this long
# so that no demo instance has a zero-length (unpriceable) run.
MINIMUM_RUN = timedelta(seconds=2)
# Without an explicit ``now``, a finished demo launch completes this long after its first instance
# started: the same window in every seeding, so that two seedings of the demo (make chaos's two passes)
# price identically. The FSx file system is charged per second of the window; instances and volumes run
# less than the 60-second minimum either way.
LAUNCH_RUN = timedelta(seconds=10)


@dataclass(frozen=True)
class DemoInstance:
    instance_type: str
    spot: bool = False


@dataclass(frozen=True)
class DemoVolume:
    volume_type: str
    size_gib: int
    iops: int | None = None
    throughput_mibps: int | None = None


@dataclass(frozen=True)
class DemoLustre:
    deployment_type: str
    capacity_gib: int
    throughput_per_tib: int | None = None


@dataclass(frozen=True)
class DemoLaunch:
    """One seeded launch: ``batch_instances`` run its Batch jobs; ``direct_instances`` are listed on the
    record itself (a head node outside Batch)."""

    launch_id: str
    workflow_type: str
    status: str
    batch_instances: tuple[DemoInstance, ...]
    jobs: int = 3
    direct_instances: tuple[DemoInstance, ...] = ()
    volumes: tuple[DemoVolume, ...] = ()
    lustre: DemoLustre | None = None

    @property
    def instances(self) -> tuple[DemoInstance, ...]:
        return self.batch_instances + self.direct_instances


GP3_FAST = DemoVolume("gp3", 500, iops=6000, throughput_mibps=250)
GP3_SMALL = DemoVolume("gp3", 200, iops=3000, throughput_mibps=125)
GP2 = DemoVolume("gp2", 100)
SCRATCH = DemoLustre("SCRATCH_2", 1200)
PERSISTENT = DemoLustre("PERSISTENT_2", 2400, throughput_per_tib=125)

# Both workflow types ran on x86 (m5, c5, r5) and Graviton (m6g, c6g), so the comparison report has both
# architectures per workflow type.
DEMO_LAUNCHES: tuple[DemoLaunch, ...] = (
    DemoLaunch(
        "germline-wgs-0001",
        "germline-wgs",
        "COMPLETE",
        (DemoInstance("m5.xlarge"), DemoInstance("m5.xlarge"), DemoInstance("r5.2xlarge", spot=True)),
        jobs=4,
        volumes=(GP3_FAST,),
        lustre=SCRATCH,
    ),
    DemoLaunch(
        "germline-wgs-0002",
        "germline-wgs",
        "COMPLETE",
        (DemoInstance("m6g.xlarge"), DemoInstance("m6g.xlarge", spot=True), DemoInstance("c6g.4xlarge")),
        jobs=4,
        volumes=(GP3_FAST,),
        lustre=SCRATCH,
    ),
    DemoLaunch(
        "germline-wgs-0003",
        "germline-wgs",
        "COMPLETE",
        (DemoInstance("c5.2xlarge", spot=True), DemoInstance("c5.2xlarge", spot=True)),
        direct_instances=(DemoInstance("m5.xlarge"),),
        volumes=(GP2, GP3_SMALL),
        lustre=PERSISTENT,
    ),
    DemoLaunch(
        "rnaseq-quant-0001",
        "rnaseq-quant",
        "COMPLETE",
        (DemoInstance("c5.2xlarge"), DemoInstance("m5.xlarge", spot=True)),
        volumes=(GP2,),
    ),
    DemoLaunch(
        "rnaseq-quant-0002",
        "rnaseq-quant",
        "COMPLETE",
        (DemoInstance("c6g.4xlarge", spot=True), DemoInstance("m6g.xlarge")),
        volumes=(GP3_SMALL,),
        lustre=PERSISTENT,
    ),
    DemoLaunch(
        "rnaseq-quant-0003",
        "rnaseq-quant",
        "COMPLETE",
        (DemoInstance("m6g.xlarge"), DemoInstance("m6g.xlarge")),
        jobs=2,
        volumes=(GP2,),
    ),
    # Not finished, and failed: the pricing run must leave both alone.
    DemoLaunch("germline-wgs-0004", "germline-wgs", "RUNNING", (DemoInstance("r5.2xlarge"),), jobs=2),
    DemoLaunch("rnaseq-quant-0004", "rnaseq-quant", "FAILED", (DemoInstance("c5.2xlarge"),), jobs=1),
)

# The demo adds one launch that cannot be priced (the snapshot has no m7i price): it gets a pricing_error
# and is tried again by every run until a price exists.
DEMO_UNPRICEABLE = DemoLaunch(
    "rnaseq-quant-0005", "rnaseq-quant", "COMPLETE", (DemoInstance("m7i.xlarge"),), jobs=1
)


def seed_launches(
    clients: Any,
    dynamodb: Any,
    table: str,
    now: datetime | None = None,
    launches: tuple[DemoLaunch, ...] = DEMO_LAUNCHES,
) -> list[dict]:
    """Create the resources of ``launches`` on the moto server behind ``clients`` (``batch``, ``ecs``,
    ``ec2``, ``fsx``; ``iam`` optional), end the ones that are no longer RUNNING, and write their records
    to DynamoDB table ``table`` (created when missing). Returns the records as plain values.

    ``now``: the completed_at of the finished launches; default ``LAUNCH_RUN`` after each launch's first
    instance started (waited for, so it is never in the future). Refuses any endpoint that is not a local one (it creates instances)."""
    endpoint = _moto_endpoint(clients.ec2)
    enable_batch_without_docker(endpoint)
    ensure_launches_table(dynamodb, table)

    region = clients.ec2.meta.region_name
    network = _Network.create(clients.ec2, region)
    service_role = _batch_service_role(getattr(clients, "iam", None) or _moto_client("iam", endpoint, region))
    clients.batch.register_job_definition(
        jobDefinitionName=JOB_DEFINITION,
        type="container",
        containerProperties={"image": "public.ecr.aws/docker/library/busybox", "vcpus": 2, "memory": 4096},
    )

    seeded = [_seed_launch(clients, network, service_role, launch) for launch in launches]
    finished = [s for s in seeded if s.launch.status != "RUNNING"]
    _wait_for_minimum_run(clients.ec2, [i for s in seeded for i in s.instance_ids])
    ended = [instance_id for s in finished for instance_id in s.instance_ids]
    if ended:
        clients.ec2.terminate_instances(InstanceIds=ended)
    launch_times = _launch_times(clients.ec2, [i for s in seeded for i in s.instance_ids])
    if now is None and launch_times:
        _wait_until(max(launch_times.values()) + LAUNCH_RUN)
    items = [s.record(region, launch_times, now) for s in seeded]
    for item in items:
        put_launch(dynamodb, table, item)
    log.info("seeded %d launches into %s (%d finished)", len(items), table, len(finished))
    return items


def enable_batch_without_docker(endpoint: str) -> None:
    """Switch the moto server to its Docker-less Batch ("batch_simple": submitted jobs succeed at once).

    The default Batch backend runs each job in a Docker container, and no Docker engine runs here. The
    setting is server-wide and survives ``/moto-api/reset``; it changes nothing but SubmitJob."""
    request = urllib.request.Request(
        f"{endpoint}/moto-api/config",
        data=json.dumps({"batch": {"use_docker": False}}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


# -- one launch ------------------------------------------------------------------------------------------


@dataclass
class _Seeded:
    launch: DemoLaunch
    batch_instance_ids: list[str]
    direct_instance_ids: list[str]
    job_ids: list[str]
    volume_ids: list[str]
    file_system_id: str | None

    @property
    def instance_ids(self) -> list[str]:
        return self.batch_instance_ids + self.direct_instance_ids

    def record(self, region: str, launch_times: dict[str, datetime], completed_at: datetime | None) -> dict:
        started_at = min(launch_times[i] for i in self.instance_ids)
        completed_at = completed_at or started_at + LAUNCH_RUN
        if completed_at < started_at:
            raise ValueError(
                f"now={completed_at} is before launch {self.launch.launch_id} started ({started_at})"
            )
        record: dict[str, Any] = {
            "launch_id": self.launch.launch_id,
            "workflow_type": self.launch.workflow_type,
            "status": self.launch.status,
            "created_at": _iso(started_at - PREPARING),
            "started_at": _iso(started_at),
            "region": region,
            "batch_job_ids": self.job_ids,
        }
        # A running launch has no completion time (and so stays out of the by_status index's range).
        if self.launch.status != "RUNNING":
            record["completed_at"] = _iso(completed_at)
        if self.direct_instance_ids:
            record["instance_ids"] = self.direct_instance_ids
        if self.volume_ids:
            record["volume_ids"] = self.volume_ids
        if self.file_system_id:
            record["fsx_file_system_id"] = self.file_system_id
        return record


def _seed_launch(clients: Any, network: _Network, service_role: str, launch: DemoLaunch) -> _Seeded:
    batch_ids = _run_instances(clients.ec2, network, launch.batch_instances, launch.launch_id)
    direct_ids = _run_instances(clients.ec2, network, launch.direct_instances, launch.launch_id)
    cluster, queue = _batch_environment(clients.batch, service_role, launch.launch_id)
    for instance_id in batch_ids:
        _register_container_instance(clients.ecs, cluster, instance_id, network)
    job_ids = [
        clients.batch.submit_job(
            jobName=f"{launch.workflow_type}-step-{n}", jobQueue=queue, jobDefinition=JOB_DEFINITION
        )["jobId"]
        for n in range(launch.jobs)
    ]
    volume_ids = [
        _attached_volume(clients.ec2, network, volume, batch_ids[0], n)
        for n, volume in enumerate(launch.volumes)
    ]
    file_system_id = _lustre(clients.fsx, network, launch.lustre, launch.launch_id) if launch.lustre else None
    return _Seeded(launch, batch_ids, direct_ids, job_ids, volume_ids, file_system_id)


def _run_instances(
    ec2: Any, network: _Network, instances: tuple[DemoInstance, ...], launch_id: str
) -> list[str]:
    ids = []
    for instance in instances:
        request: dict[str, Any] = {
            "ImageId": AMI_ID,
            "MinCount": 1,
            "MaxCount": 1,
            "InstanceType": instance.instance_type,
            "SubnetId": network.subnet_id,
            "SecurityGroupIds": [network.security_group_id],
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": [{"Key": "launch_id", "Value": launch_id}]}
            ],
        }
        if instance.spot:
            request["InstanceMarketOptions"] = {"MarketType": "spot"}
        ids += [i["InstanceId"] for i in ec2.run_instances(**request)["Instances"]]
    return ids


def _batch_environment(batch: Any, service_role: str, launch_id: str) -> tuple[str, str]:
    """An unmanaged compute environment (its instances are ours, registered by hand) and a queue on it:
    (ECS cluster ARN, job queue ARN). The suffix lets a second seeding of the same server succeed."""
    suffix = uuid.uuid4().hex[:6]
    environment = batch.create_compute_environment(
        computeEnvironmentName=f"{launch_id}-{suffix}",
        type="UNMANAGED",
        state="ENABLED",
        serviceRole=service_role,
    )["computeEnvironmentArn"]
    cluster = batch.describe_compute_environments(computeEnvironments=[environment])["computeEnvironments"][
        0
    ]["ecsClusterArn"]
    queue = batch.create_job_queue(
        jobQueueName=f"{launch_id}-{suffix}",
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}],
    )["jobQueueArn"]
    return cluster, queue


def _register_container_instance(ecs: Any, cluster: str, instance_id: str, network: _Network) -> None:
    """What the ECS agent does on boot: register with the cluster, identified by the instance identity
    document."""
    document = {
        "instanceId": instance_id,
        "availabilityZone": network.availability_zone,
        "region": network.region,
    }
    ecs.register_container_instance(cluster=cluster, instanceIdentityDocument=json.dumps(document))


def _attached_volume(ec2: Any, network: _Network, volume: DemoVolume, instance_id: str, index: int) -> str:
    request: dict[str, Any] = {
        "AvailabilityZone": network.availability_zone,
        "Size": volume.size_gib,
        "VolumeType": volume.volume_type,
    }
    if volume.iops:
        request["Iops"] = volume.iops
    if volume.throughput_mibps:
        request["Throughput"] = volume.throughput_mibps
    volume_id = ec2.create_volume(**request)["VolumeId"]
    ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device=f"/dev/sd{chr(ord('f') + index)}")
    return volume_id


def _lustre(fsx: Any, network: _Network, lustre: DemoLustre, launch_id: str) -> str:
    configuration: dict[str, Any] = {"DeploymentType": lustre.deployment_type}
    if lustre.throughput_per_tib:
        configuration["PerUnitStorageThroughput"] = lustre.throughput_per_tib
    return fsx.create_file_system(
        FileSystemType="LUSTRE",
        StorageCapacity=lustre.capacity_gib,
        StorageType="SSD",
        SubnetIds=[network.subnet_id],
        SecurityGroupIds=[network.security_group_id],
        LustreConfiguration=configuration,
        Tags=[{"Key": "launch_id", "Value": launch_id}],
    )["FileSystem"]["FileSystemId"]


# -- shared resources ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Network:
    region: str
    availability_zone: str
    subnet_id: str
    security_group_id: str

    @classmethod
    def create(cls, ec2: Any, region: str) -> _Network:
        zone = f"{region}a"
        vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.1.0/24", AvailabilityZone=zone)["Subnet"][
            "SubnetId"
        ]
        group = ec2.create_security_group(
            GroupName=f"genomics-batch-{uuid.uuid4().hex[:6]}",
            Description="genomics Batch compute",
            VpcId=vpc,
        )["GroupId"]
        return cls(region, zone, subnet, group)


def _batch_service_role(iam: Any) -> str:
    name = "AWSBatchServiceRole"
    try:
        return iam.get_role(RoleName=name)["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "batch.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        return iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(policy))["Role"]["Arn"]


def _wait_for_minimum_run(ec2: Any, instance_ids: list[str]) -> None:
    if instance_ids:
        _wait_until(max(_launch_times(ec2, instance_ids).values()) + MINIMUM_RUN)


def _wait_until(moment: datetime) -> None:
    wait = (moment - datetime.now(UTC)).total_seconds()
    if wait > 0:
        time.sleep(wait)


def _launch_times(ec2: Any, instance_ids: list[str]) -> dict[str, datetime]:
    """LaunchTime as describe_instances reports it, which is what the collector will read."""
    pages = ec2.get_paginator("describe_instances").paginate(InstanceIds=instance_ids)
    return {
        instance["InstanceId"]: instance["LaunchTime"].astimezone(UTC)
        for page in pages
        for reservation in page["Reservations"]
        for instance in reservation["Instances"]
    }


def _moto_endpoint(client: Any) -> str:
    endpoint = client.meta.endpoint_url
    if "amazonaws.com" in endpoint or not endpoint.startswith("http://"):
        raise ValueError(f"seed_launches only seeds a local moto server, not {endpoint}")
    return endpoint.rstrip("/")


def _moto_client(service: str, endpoint: str, region: str) -> Any:
    # moto accepts any credentials.
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _iso(value: datetime) -> str:
    """``2026-12-01T10:00:00+00:00``: whole seconds, as the workflow manager writes them."""
    return value.astimezone(UTC).replace(microsecond=0).isoformat()

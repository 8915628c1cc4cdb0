"""The collector's pure parts: StateTransitionReason times, the launch window, clipping, volume and file
system fields, and the Batch paths moto cannot produce (an attempt naming its container instance)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from dataplatform.pricing.collect import (
    batch_instance_ids,
    describe_instances,
    file_system_usage,
    instance_usage,
    launch_interval,
    parse_transition_time,
    volume_usage,
)
from dataplatform.pricing.resources import Interval, PricingError

pytestmark = pytest.mark.unit

START = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
END = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
WINDOW = Interval(START, END)


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("User initiated (2026-12-01 12:30:05 GMT)", datetime(2026, 12, 1, 12, 30, 5, tzinfo=UTC)),
        ("User initiated (2026-12-01 12:30:05 UTC)", datetime(2026, 12, 1, 12, 30, 5, tzinfo=UTC)),
        ("Service initiated (2026-01-31 23:59:59 GMT)", datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC)),
        ("", None),
        ("Server.SpotInstanceTermination", None),
        ("User initiated", None),
        (None, None),
    ],
)
def test_transition_time(reason, expected):
    assert parse_transition_time(reason) == expected


def ec2_instance(
    state="terminated", reason="User initiated (2026-12-01 12:00:00 GMT)", launched=START, **extra
):
    return {
        "InstanceId": "i-1",
        "InstanceType": "m6g.xlarge",
        "LaunchTime": launched,
        "State": {"Name": state},
        "StateTransitionReason": reason,
        "Placement": {"AvailabilityZone": "us-east-1b"},
        **extra,
    }


def test_terminated_instance_runs_until_its_transition_time():
    usage = instance_usage(ec2_instance(launched=START + timedelta(minutes=5)), WINDOW)

    assert (usage.instance_type, usage.lifecycle, usage.availability_zone) == (
        "m6g.xlarge",
        "on-demand",
        "us-east-1b",
    )
    assert (usage.interval.start, usage.interval.end) == (
        START + timedelta(minutes=5),
        datetime(2026, 12, 1, 12, 0, tzinfo=UTC),
    )


def test_running_instance_runs_until_the_launch_ended_and_is_clipped_to_its_start():
    usage = instance_usage(
        ec2_instance(
            state="running", reason="", launched=START - timedelta(days=1), InstanceLifecycle="spot"
        ),
        WINDOW,
    )

    assert usage.lifecycle == "spot"
    assert usage.interval == WINDOW


def test_stopped_instance_uses_its_stop_time_and_terminated_after_the_launch_is_clipped():
    stopped = instance_usage(
        ec2_instance(state="stopped", reason="User initiated (2026-12-01 11:00:00 GMT)"), WINDOW
    )
    later = instance_usage(ec2_instance(reason="User initiated (2026-12-02 09:00:00 GMT)"), WINDOW)

    assert stopped.interval.end == datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
    assert later.interval.end == END


def test_instance_outside_the_window_is_dropped():
    ended_before = ec2_instance(
        launched=START - timedelta(hours=3), reason="User initiated (2026-12-01 09:00:00 GMT)"
    )
    started_after = ec2_instance(state="running", reason="", launched=END + timedelta(minutes=1))

    assert instance_usage(ended_before, WINDOW) is None
    assert instance_usage(started_after, WINDOW) is None


def test_terminated_instance_without_a_time_is_charged_to_the_launch_end():
    usage = instance_usage(ec2_instance(reason="Server.SpotInstanceTermination"), WINDOW)

    assert usage.interval == WINDOW


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"completed_at": "2026-12-01T14:00:00+00:00"}, "started_at is missing"),
        ({"started_at": "2026-12-01T10:00:00+00:00"}, "completed_at is missing"),
        (
            {"started_at": "2026-12-01T10:00:00+00:00", "completed_at": "yesterday"},
            "completed_at 'yesterday' is not an ISO-8601 time",
        ),
        (
            {"started_at": "2026-12-01T15:00:00+00:00", "completed_at": "2026-12-01T14:00:00+00:00"},
            "completed_at .* is before started_at",
        ),
    ],
)
def test_launch_window_errors_name_the_field(record, message):
    with pytest.raises(PricingError, match=f"launch L-1: {message}"):
        launch_interval({"launch_id": "L-1", **record})


def test_launch_window_reads_offsets_z_and_naive_times_as_utc():
    window = launch_interval(
        {"launch_id": "L", "started_at": "2026-12-01T11:00:00+01:00", "completed_at": "2026-12-01T14:00:00Z"}
    )
    naive = launch_interval(
        {"launch_id": "L", "started_at": "2026-12-01T10:00:00", "completed_at": "2026-12-01T14:00:00"}
    )

    assert window == WINDOW == naive


@pytest.mark.parametrize(
    ("volume_type", "iops", "throughput", "expected"),
    [
        ("gp3", 6000, 250, (6000, 250)),
        ("io2", 16000, None, (16000, None)),
        ("io1", 3000, None, (3000, None)),
        ("gp2", 300, None, (None, None)),  # a baseline figure, not a provisioned (billed) one
        ("st1", 500, 40, (None, None)),
    ],
)
def test_volume_keeps_only_the_billed_iops_and_throughput(volume_type, iops, throughput, expected):
    volume = {
        "VolumeId": "vol-1",
        "VolumeType": volume_type,
        "Size": 500,
        "CreateTime": START - timedelta(days=3),
    }
    volume |= {"Iops": iops} if iops else {}
    volume |= {"Throughput": throughput} if throughput else {}

    usage = volume_usage(volume, WINDOW)

    assert (usage.iops, usage.throughput_mibps) == expected
    assert (usage.size_gib, usage.interval) == (500, WINDOW)


def test_volume_created_during_the_launch_is_charged_from_its_creation_and_after_it_not_at_all():
    during = {"VolumeId": "vol-1", "VolumeType": "gp2", "Size": 8, "CreateTime": START + timedelta(hours=1)}
    after = {**during, "CreateTime": END + timedelta(seconds=1)}

    assert volume_usage(during, WINDOW).interval == Interval(START + timedelta(hours=1), END)
    assert volume_usage(after, WINDOW) is None


class FakeFsx:
    def __init__(self, file_systems):
        self.file_systems = file_systems

    def describe_file_systems(self, FileSystemIds):
        found = [fs for fs in self.file_systems if fs["FileSystemId"] in FileSystemIds]
        if not found:
            raise ClientError(
                {"Error": {"Code": "FileSystemNotFound", "Message": "nope"}}, "DescribeFileSystems"
            )
        return {"FileSystems": found}


def lustre(deployment_type="PERSISTENT_1", **extra):
    return {
        "FileSystemId": "fs-1",
        "FileSystemType": "LUSTRE",
        "StorageCapacity": 2400,
        "CreationTime": START + timedelta(minutes=30),
        "LustreConfiguration": {"DeploymentType": deployment_type, "PerUnitStorageThroughput": 200},
        **extra,
    }


def test_lustre_file_system_fields():
    persistent = file_system_usage(FakeFsx([lustre(StorageType="HDD")]), "fs-1", WINDOW)
    scratch = file_system_usage(FakeFsx([lustre("SCRATCH_2")]), "fs-1", WINDOW)

    assert (persistent.deployment_type, persistent.storage_type, persistent.storage_capacity_gib) == (
        "PERSISTENT_1",
        "HDD",
        2400,
    )
    assert persistent.throughput_per_tib == 200
    assert persistent.interval == Interval(START + timedelta(minutes=30), END)
    assert (scratch.storage_type, scratch.throughput_per_tib) == ("SSD", None)


def test_file_system_not_found_or_not_lustre_raises():
    with pytest.raises(PricingError, match="FSx file system not found: fs-2"):
        file_system_usage(FakeFsx([lustre()]), "fs-2", WINDOW)
    with pytest.raises(PricingError, match="fs-1 is WINDOWS, not LUSTRE"):
        file_system_usage(FakeFsx([lustre(FileSystemType="WINDOWS")]), "fs-1", WINDOW)


class FakeEc2:
    """DescribeInstances as AWS answers it: one unknown id fails the whole call and only it is named."""

    def __init__(self, known):
        self.known = set(known)
        self.calls = []

    def get_paginator(self, name):
        assert name == "describe_instances"
        return self

    def paginate(self, InstanceIds):
        self.calls.append(list(InstanceIds))
        unknown = [i for i in InstanceIds if i not in self.known]
        if unknown:
            raise ClientError(
                {
                    "Error": {
                        "Code": "InvalidInstanceID.NotFound",
                        "Message": f"'{unknown[0]}' does not exist",
                    }
                },
                "DescribeInstances",
            )
        return [{"Reservations": [{"Instances": [{"InstanceId": i} for i in InstanceIds]}]}]


def test_describe_instances_chunks_by_1000_and_names_every_missing_id():
    known = [f"i-{n:05d}" for n in range(2500)]
    ec2 = FakeEc2(known)

    assert [i["InstanceId"] for i in describe_instances(ec2, known)] == known
    assert [len(call) for call in ec2.calls] == [1000, 1000, 500]

    with pytest.raises(PricingError) as raised:
        describe_instances(FakeEc2(known), [*known[:3], "i-gone1", known[3], "i-gone2"])
    assert str(raised.value) == "EC2 instances not found: i-gone1, i-gone2"


class FakeBatch:
    def __init__(self, jobs, queues, environments):
        self.jobs, self.queues, self.environments = jobs, queues, environments

    def describe_jobs(self, jobs):
        return {"jobs": [j for j in self.jobs if j["jobId"] in jobs]}

    def describe_job_queues(self, jobQueues):
        return {"jobQueues": [q for q in self.queues if q["jobQueueArn"] in jobQueues]}

    def describe_compute_environments(self, computeEnvironments):
        return {
            "computeEnvironments": [
                e for e in self.environments if e["computeEnvironmentArn"] in computeEnvironments
            ]
        }


class FakeEcs:
    def __init__(self, container_instances):
        self.container_instances = container_instances  # cluster -> {arn: ec2 id}
        self.listed, self.described = [], []

    def get_paginator(self, name):
        assert name == "list_container_instances"
        return self

    def paginate(self, cluster):
        self.listed.append(cluster)
        return [{"containerInstanceArns": list(self.container_instances[cluster])}]

    def describe_container_instances(self, cluster, containerInstances):
        self.described.append((cluster, list(containerInstances)))
        known = self.container_instances[cluster]
        return {
            "containerInstances": [
                {"containerInstanceArn": arn, "ec2InstanceId": known[arn]}
                for arn in containerInstances
                if arn in known
            ]
        }


def ci(n):
    return f"arn:aws:ecs:us-east-1:123456789012:container-instance/c/{n}"


def batch_job(job_id, container_instance="TBD"):
    return {
        "jobId": job_id,
        "jobQueue": "arn:q",
        "attempts": [{"container": {"containerInstanceArn": container_instance}}],
    }


QUEUES = [
    {
        "jobQueueArn": "arn:q",
        "jobQueueName": "q",
        "computeEnvironmentOrder": [{"computeEnvironment": "arn:ce"}],
    }
]
ENVIRONMENTS = [
    {"computeEnvironmentArn": "arn:ce", "computeEnvironmentName": "ce", "ecsClusterArn": "arn:cluster"}
]


def test_job_naming_its_container_instance_is_charged_with_that_instance_only():
    ecs = FakeEcs({"arn:cluster": {ci(1): "i-1", ci(2): "i-2", ci(3): "i-3"}})
    batch = FakeBatch([batch_job("j1", ci(2)), batch_job("j2", ci(3))], QUEUES, ENVIRONMENTS)

    found = batch_instance_ids(batch, ecs, ["j1", "j2"])

    assert found.instance_ids == ("i-2", "i-3")
    assert (found.jobs, found.compute_environments) == (2, 1)
    assert ecs.listed == []  # the cluster's other instances are not this launch's


def test_jobs_without_a_named_instance_take_the_whole_cluster_listed_once():
    arns = {ci(n): f"i-{n}" for n in range(150)}
    ecs = FakeEcs({"arn:cluster": arns})
    batch = FakeBatch(
        [batch_job("j1"), batch_job("j2"), {**batch_job("j3"), "attempts": []}], QUEUES, ENVIRONMENTS
    )

    found = batch_instance_ids(batch, ecs, ["j1", "j2", "j3"])

    assert found.instance_ids == tuple(arns.values())
    assert ecs.listed == ["arn:cluster"]
    assert [len(arns) for _, arns in ecs.described] == [100, 50]


def test_unknown_container_instance_queue_or_environment_raises():
    ecs = FakeEcs({"arn:cluster": {ci(1): "i-1"}})
    with pytest.raises(PricingError, match=f"container instances not found: {ci(9)}"):
        batch_instance_ids(FakeBatch([batch_job("j1", ci(9))], QUEUES, ENVIRONMENTS), ecs, ["j1"])
    with pytest.raises(PricingError, match="job queues not found: arn:q"):
        batch_instance_ids(FakeBatch([batch_job("j1")], [], ENVIRONMENTS), ecs, ["j1"])
    with pytest.raises(PricingError, match="compute environments not found: arn:ce"):
        batch_instance_ids(FakeBatch([batch_job("j1")], QUEUES, []), ecs, ["j1"])
    fargate = [{**ENVIRONMENTS[0], "ecsClusterArn": None}]
    with pytest.raises(PricingError, match="arn:ce has no ECS cluster"):
        batch_instance_ids(FakeBatch([batch_job("j1")], QUEUES, fargate), ecs, ["j1"])

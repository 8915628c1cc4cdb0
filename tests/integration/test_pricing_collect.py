"""The launch usage collector against the moto server: Batch -> ECS -> EC2, EBS and FSx as the seeded
demo launches create them, the clipping to the launch window, and every way a launch cannot be priced.

The module seeds once: every seeding waits until ``LAUNCH_RUN`` after its first instance started (so a
finished launch never completes in the future), so the demo launches and every launch a test needs are
seeded together, each under its own launch id, and the tests look their records up by id. No test changes
AWS state: each builds its launch record variants in memory and only reads AWS."""

from __future__ import annotations

import copy
import logging
from collections import Counter
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest

from dataplatform.pricing.collect import collect_launch_usage, parse_transition_time
from dataplatform.pricing.launches import get_launch
from dataplatform.pricing.resources import PricingError, architecture
from dataplatform.pricing.sample import (
    DEMO_LAUNCHES,
    GP2,
    GP3_FAST,
    PERSISTENT,
    DemoInstance,
    DemoLaunch,
    seed_launches,
)

pytestmark = pytest.mark.integration

TABLE = "it_workflow_launches"
REGION = "us-east-1"
ZONE = "us-east-1a"

# The launches of the tests below, beside the demo's (ids distinct from the demo's).
TEST_LAUNCHES = (
    DemoLaunch("calls-1", "germline-wgs", "COMPLETE", (DemoInstance("m5.xlarge"),) * 3, jobs=5),
    DemoLaunch("many-jobs", "rnaseq-quant", "COMPLETE", (DemoInstance("c5.2xlarge"),), jobs=230),
    DemoLaunch("clip", "germline-wgs", "RUNNING", (DemoInstance("r5.2xlarge", spot=True),)),
    DemoLaunch("wide", "germline-wgs", "COMPLETE", (DemoInstance("m6g.xlarge"),)),
    DemoLaunch("earlier", "germline-wgs", "COMPLETE", (DemoInstance("c5.2xlarge"),)),
    DemoLaunch("this", "germline-wgs", "RUNNING", (DemoInstance("m5.xlarge"),)),
    DemoLaunch("attached", "rnaseq-quant", "RUNNING", (DemoInstance("m5.xlarge"),), volumes=(GP3_FAST,)),
    DemoLaunch(
        "lustre",
        "germline-wgs",
        "COMPLETE",
        (DemoInstance("c6g.4xlarge"),),
        volumes=(GP2,),
        lustre=PERSISTENT,
    ),
    DemoLaunch("one", "germline-wgs", "COMPLETE", (DemoInstance("m5.xlarge"),), volumes=(GP2,)),
)


def new_clients():
    """Clients built the way the product builds them, on whatever state the moto server holds."""
    from dataplatform.aws import client

    return SimpleNamespace(
        batch=client("batch"),
        ecs=client("ecs"),
        ec2=client("ec2"),
        fsx=client("fsx"),
        iam=client("iam"),
        dynamodb=client("dynamodb"),
    )


@pytest.fixture(scope="module")
def seeded(moto_server):
    """Empty AWS state, then the demo launches and TEST_LAUNCHES in one seeding: launch id -> record."""
    assert not {spec.launch_id for spec in DEMO_LAUNCHES} & {spec.launch_id for spec in TEST_LAUNCHES}
    moto_server.reset()
    clients = new_clients()
    items = seed_launches(clients, clients.dynamodb, TABLE, launches=DEMO_LAUNCHES + TEST_LAUNCHES)
    return {item["launch_id"]: item for item in items}


@pytest.fixture
def records(seeded):
    """The seeded records, a copy per test: what one test does to a record never reaches another."""
    return copy.deepcopy(seeded)


@pytest.fixture(scope="module")
def clients(seeded):
    """Clients on the module's seeded state, shared by the tests (building them costs ~1 s). A test that
    counts calls builds its own (``new_clients()``): ``count_calls`` registers event handlers on them."""
    return new_clients()


def instance(ec2, instance_id):
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def batch_instance_ids(clients, record):
    """The EC2 ids the ECS cluster behind the record's first job knows (what the seed registered)."""
    job = clients.batch.describe_jobs(jobs=record["batch_job_ids"][:1])["jobs"][0]
    queue = clients.batch.describe_job_queues(jobQueues=[job["jobQueue"]])["jobQueues"][0]
    environment = queue["computeEnvironmentOrder"][0]["computeEnvironment"]
    cluster = clients.batch.describe_compute_environments(computeEnvironments=[environment])[
        "computeEnvironments"
    ][0]["ecsClusterArn"]
    arns = clients.ecs.list_container_instances(cluster=cluster)["containerInstanceArns"]
    described = clients.ecs.describe_container_instances(cluster=cluster, containerInstances=arns)
    return {ci["ec2InstanceId"] for ci in described["containerInstances"]}


def count_calls(client, service, operation):
    """Every request ``client`` makes for ``operation``, as the keyword arguments it was called with.
    ``client`` must be the test's own (``new_clients()``): the handler stays registered on it."""
    calls = []
    client.meta.events.register(
        f"provide-client-params.{service}.{operation}", lambda params, **_: calls.append(dict(params))
    )
    return calls


# -- the seeded demo launches --------------------------------------------------------------------------


def test_seeded_complete_launches_collect_to_what_was_seeded(clients, records):
    complete = [launch for launch in DEMO_LAUNCHES if launch.status == "COMPLETE"]
    assert len(complete) == 6
    for spec in complete:
        record = records[spec.launch_id]
        usage = collect_launch_usage(record, clients)

        assert (usage.launch_id, usage.region) == (spec.launch_id, REGION)
        assert usage.interval.start.isoformat() == record["started_at"]
        assert usage.interval.end.isoformat() == record["completed_at"]
        assert Counter((i.instance_type, i.lifecycle) for i in usage.instances) == Counter(
            (i.instance_type, "spot" if i.spot else "on-demand") for i in spec.instances
        )
        assert {i.availability_zone for i in usage.instances} == {ZONE}
        for used in usage.instances:
            # Terminated by the seed after at least 2 s; the interval is the run, inside the window.
            assert usage.interval.start <= used.interval.start < used.interval.end <= usage.interval.end
            assert used.interval.seconds >= 2
            described = instance(clients.ec2, used.instance_id)
            assert used.interval.start == described["LaunchTime"]
            assert used.interval.end == parse_transition_time(described["StateTransitionReason"])
        # The listed volumes only: root volumes were deleted with their instances.
        assert sorted(
            (v.volume_type, v.size_gib, v.iops, v.throughput_mibps) for v in usage.volumes
        ) == sorted((v.volume_type, v.size_gib, v.iops, v.throughput_mibps) for v in spec.volumes)
        assert {v.volume_id for v in usage.volumes} == set(record["volume_ids"])
        for volume in usage.volumes:
            # Charged from its creation (moments after the first instance booted) to the launch end.
            created = clients.ec2.describe_volumes(VolumeIds=[volume.volume_id])["Volumes"][0]["CreateTime"]
            assert volume.interval.start == max(created, usage.interval.start)
            assert volume.interval.end == usage.interval.end
        expected_fs = (
            [(spec.lustre.deployment_type, "SSD", spec.lustre.capacity_gib, spec.lustre.throughput_per_tib)]
            if spec.lustre
            else []
        )
        assert [
            (f.deployment_type, f.storage_type, f.storage_capacity_gib, f.throughput_per_tib)
            for f in usage.file_systems
        ] == expected_fs
        assert [f.file_system_id for f in usage.file_systems] == (
            [record["fsx_file_system_id"]] if spec.lustre else []
        )


def test_seeded_records_cover_both_workflows_on_both_architectures(clients, records):
    demo = {spec.launch_id: records[spec.launch_id] for spec in DEMO_LAUNCHES}
    assert set(records) == set(demo) | {spec.launch_id for spec in TEST_LAUNCHES}

    assert Counter(r["status"] for r in demo.values()) == {"COMPLETE": 6, "RUNNING": 1, "FAILED": 1}
    assert "completed_at" not in records["germline-wgs-0004"]
    assert "completed_at" in records["rnaseq-quant-0004"]
    pairs = {
        (spec.workflow_type, architecture(i.instance_type))
        for spec in DEMO_LAUNCHES
        if spec.status == "COMPLETE"
        for i in spec.instances
    }
    assert pairs == {(w, a) for w in ("germline-wgs", "rnaseq-quant") for a in ("x86_64", "arm64")}
    # What was written is what was returned, and it is what the workflow manager writes.
    for launch_id, record in records.items():
        assert get_launch(clients.dynamodb, TABLE, launch_id) == record
    assert records["germline-wgs-0001"]["started_at"].endswith("+00:00")
    # The RUNNING launch's instance still runs; the others were terminated.
    running = instance(clients.ec2, next(iter(batch_instance_ids(clients, records["germline-wgs-0004"]))))
    assert running["State"]["Name"] == "running"
    failed = instance(clients.ec2, next(iter(batch_instance_ids(clients, records["rnaseq-quant-0004"]))))
    assert failed["State"]["Name"] == "terminated"


def test_batch_instances_come_from_the_job_compute_environment_cluster(clients, records):
    record = records["germline-wgs-0003"]  # 2 Batch instances + a head node listed on the record

    usage = collect_launch_usage(record, clients)

    batch_ids = batch_instance_ids(clients, record)
    assert len(batch_ids) == 2
    assert {i.instance_id for i in usage.instances} == batch_ids | set(record["instance_ids"])
    head = next(i for i in usage.instances if i.instance_id in record["instance_ids"])
    assert (head.instance_type, head.lifecycle) == ("m5.xlarge", "on-demand")
    # Other launches' instances (other compute environments) are not charged here.
    other = batch_instance_ids(clients, records["germline-wgs-0001"])
    assert not other & {i.instance_id for i in usage.instances}


def test_each_queue_environment_and_cluster_is_described_once(records):
    clients = new_clients()  # its own: count_calls registers on them
    record = records["calls-1"]  # 3 m5.xlarge, 5 jobs
    calls = {
        name: count_calls(client, service, name)
        for client, service, name in (
            (clients.batch, "batch", "DescribeJobs"),
            (clients.batch, "batch", "DescribeJobQueues"),
            (clients.batch, "batch", "DescribeComputeEnvironments"),
            (clients.ecs, "ecs", "ListContainerInstances"),
            (clients.ecs, "ecs", "DescribeContainerInstances"),
        )
    }

    usage = collect_launch_usage(record, clients)

    assert len(usage.instances) == 3
    assert {name: len(made) for name, made in calls.items()} == dict.fromkeys(calls, 1)


def test_describe_jobs_is_called_with_at_most_100_ids(records):
    clients = new_clients()  # its own: count_calls registers on them
    record = records["many-jobs"]  # 1 c5.2xlarge, 230 jobs
    calls = count_calls(clients.batch, "batch", "DescribeJobs")

    usage = collect_launch_usage(record, clients)

    assert [len(call["jobs"]) for call in calls] == [100, 100, 30]
    assert sorted(job for call in calls for job in call["jobs"]) == sorted(record["batch_job_ids"])
    assert [i.instance_type for i in usage.instances] == ["c5.2xlarge"]


# -- the launch window ---------------------------------------------------------------------------------


def test_running_instance_is_clipped_to_the_launch_window(clients, records):
    record = records["clip"]  # RUNNING, 1 Spot r5.2xlarge
    launched = instance(clients.ec2, next(iter(batch_instance_ids(clients, record))))["LaunchTime"]
    # The launch window starts an hour after the instance booted: only the window is charged.
    start, end = launched + timedelta(hours=1), launched + timedelta(hours=3)
    record = {
        **record,
        "status": "COMPLETE",
        "started_at": start.isoformat(),
        "completed_at": end.isoformat(),
    }

    usage = collect_launch_usage(record, clients)

    [used] = usage.instances
    assert (used.instance_type, used.lifecycle, used.availability_zone) == ("r5.2xlarge", "spot", ZONE)
    assert (used.interval.start, used.interval.end) == (start, end)
    assert used.interval.seconds == 2 * 3600


def test_terminated_instance_runs_from_launch_to_termination_inside_a_wider_window(clients, records):
    record = records["wide"]  # COMPLETE, 1 m6g.xlarge
    described = instance(clients.ec2, next(iter(batch_instance_ids(clients, record))))
    terminated = parse_transition_time(described["StateTransitionReason"])
    start, end = described["LaunchTime"] - timedelta(hours=1), terminated + timedelta(hours=1)
    record = {**record, "started_at": start.isoformat(), "completed_at": end.isoformat()}

    usage = collect_launch_usage(record, clients)

    [used] = usage.instances
    assert described["State"]["Name"] == "terminated"
    assert (used.interval.start, used.interval.end) == (described["LaunchTime"], terminated)


def test_instance_that_ended_before_the_launch_started_is_dropped(clients, records, caplog):
    # "earlier": COMPLETE, 1 c5.2xlarge; "this": RUNNING, 1 m5.xlarge booted before "earlier" ended.
    [earlier_id] = batch_instance_ids(clients, records["earlier"])
    ended = parse_transition_time(instance(clients.ec2, earlier_id)["StateTransitionReason"])
    start = ended + timedelta(seconds=1)
    record = {
        **records["this"],
        "status": "COMPLETE",
        "instance_ids": [earlier_id],
        "started_at": start.isoformat(),
        "completed_at": (start + timedelta(hours=1)).isoformat(),
    }

    with caplog.at_level(logging.INFO, logger="dataplatform.pricing.collect"):
        usage = collect_launch_usage(record, clients)

    assert [(i.instance_type, i.interval.start) for i in usage.instances] == [("m5.xlarge", start)]
    assert f"instance {earlier_id} (c5.2xlarge) did not run between" in caplog.text
    assert (
        "launch this: 3 Batch jobs -> 1 compute environment -> 1 instance (0 spot), 1 volume, 0 file systems"
        in caplog.text
    )


def test_volumes_attached_to_launch_instances_are_included(clients, records):
    record = records["attached"]  # RUNNING, 1 m5.xlarge with its root volume and a listed GP3_FAST
    [instance_id] = batch_instance_ids(clients, record)
    [root] = [
        m["Ebs"]["VolumeId"]
        for m in instance(clients.ec2, instance_id)["BlockDeviceMappings"]
        if m["DeviceName"] == "/dev/sda1"
    ]
    root_volume = clients.ec2.describe_volumes(VolumeIds=[root])["Volumes"][0]
    launched = instance(clients.ec2, instance_id)["LaunchTime"]
    record = {**record, "completed_at": (launched + timedelta(hours=2)).isoformat()}

    usage = collect_launch_usage(record, clients)

    volumes = {v.volume_id: v for v in usage.volumes}
    assert set(volumes) == {*record["volume_ids"], root}
    listed = volumes[record["volume_ids"][0]]
    assert (listed.volume_type, listed.size_gib, listed.iops, listed.throughput_mibps) == (
        "gp3",
        500,
        6000,
        250,
    )
    # gp2 reports a baseline IOPS figure, which is not billed.
    assert (volumes[root].volume_type, volumes[root].size_gib) == (
        root_volume["VolumeType"],
        root_volume["Size"],
    )
    assert volumes[root].throughput_mibps is None
    assert volumes[root].iops is None or root_volume["VolumeType"] in ("gp3", "io1", "io2")
    for volume_id, volume in volumes.items():
        created = clients.ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["CreateTime"]
        assert (volume.interval.start, volume.interval.end) == (
            max(created, usage.interval.start),
            usage.interval.end,
        )


def test_persistent_lustre_and_gp2_volume(clients, records):
    record = records["lustre"]  # COMPLETE, 1 c6g.4xlarge, a GP2 volume and a PERSISTENT Lustre

    usage = collect_launch_usage(record, clients)

    [file_system] = usage.file_systems
    assert (
        file_system.deployment_type,
        file_system.storage_capacity_gib,
        file_system.throughput_per_tib,
    ) == (
        "PERSISTENT_2",
        2400,
        125,
    )
    # moto reports no CreationTime: the file system is charged for the whole launch.
    assert file_system.interval == usage.interval
    [volume] = usage.volumes
    assert (volume.volume_type, volume.size_gib, volume.iops, volume.throughput_mibps) == (
        "gp2",
        100,
        None,
        None,
    )


# -- launches that cannot be priced --------------------------------------------------------------------


@pytest.fixture
def one_launch(records):
    return records["one"]  # COMPLETE, 1 m5.xlarge and a GP2 volume


def test_unknown_batch_job_is_named(clients, one_launch):
    unknown = "5b3ad3a0-0000-4000-8000-000000000000"
    record = {**one_launch, "batch_job_ids": [*one_launch["batch_job_ids"], unknown]}

    with pytest.raises(PricingError, match=f"Batch jobs not found: {unknown}$"):
        collect_launch_usage(record, clients)


def test_unknown_instances_are_all_named(clients, one_launch):
    [real] = batch_instance_ids(clients, one_launch)
    unknown = ["i-0123456789abcdef0", "i-0fedcba9876543210"]
    record = {**one_launch, "instance_ids": [real, *unknown]}

    with pytest.raises(PricingError) as raised:
        collect_launch_usage(record, clients)

    assert str(raised.value) == f"EC2 instances not found: {', '.join(unknown)}"


def test_unknown_volume_is_named(clients, one_launch):
    unknown = "vol-0123456789abcdef0"
    record = {**one_launch, "volume_ids": [*one_launch["volume_ids"], unknown]}

    with pytest.raises(PricingError) as raised:
        collect_launch_usage(record, clients)

    assert str(raised.value) == f"EBS volumes not found: {unknown}"


def test_unknown_file_system_is_named(clients, one_launch):
    record = {**one_launch, "fsx_file_system_id": "fs-0123456789abcdef0"}

    with pytest.raises(PricingError, match="FSx file system not found: fs-0123456789abcdef0"):
        collect_launch_usage(record, clients)


def test_launch_without_instances_is_never_priced_at_zero(clients, one_launch):
    record = {key: value for key, value in one_launch.items() if key != "batch_job_ids"}

    with pytest.raises(PricingError, match="no EC2 instances found for launch one"):
        collect_launch_usage(record, clients)


def test_launch_whose_only_instance_ran_outside_the_window_raises(clients, one_launch):
    start = datetime.fromisoformat(one_launch["completed_at"]) + timedelta(hours=1)
    record = {
        **one_launch,
        "started_at": start.isoformat(),
        "completed_at": (start + timedelta(hours=1)).isoformat(),
    }

    with pytest.raises(PricingError, match="no EC2 instances found for launch one"):
        collect_launch_usage(record, clients)


def test_launch_in_another_region_than_the_clients_is_refused(clients, one_launch):
    with pytest.raises(PricingError, match="ran in eu-west-1 but the clients are for us-east-1"):
        collect_launch_usage({**one_launch, "region": "eu-west-1"}, clients)

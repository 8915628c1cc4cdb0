"""benchmark_pricing with ``dag.test()`` against moto: demo launches seeded as real moto resources (Batch,
ECS, EC2 with Spot, EBS, FSx), priced from the offline snapshot, written back once, reported; reruns,
concurrent runs, launches that cannot be priced and bad params."""

from __future__ import annotations

import csv
import io
import json
import math
import threading
from datetime import datetime
from decimal import Decimal
from types import SimpleNamespace

import pytest

from dataplatform.config import REPO_ROOT, settings
from dataplatform.dynamodb import from_item
from dataplatform.pricing import launches
from dataplatform.pricing.pricer import Pricer
from dataplatform.pricing.sample import DEMO_LAUNCHES, GP2, DemoInstance, DemoLaunch, seed_launches
from dataplatform.s3.objects import split_uri
from tests.airflow_helpers import run_repo_dag, task_states
from tests.moto_helpers import AtomicWrites, ResendingClient

pytestmark = pytest.mark.integration

# On-Demand Linux us-east-1 (../shared/reference/aws-prices.md), typed in here rather than read from the
# snapshot: the test's oracle shares no code or data file with the pricing path for On-Demand.
ON_DEMAND = {
    "m5.xlarge": Decimal("0.192"),
    "c5.2xlarge": Decimal("0.34"),
    "r5.2xlarge": Decimal("0.504"),
    "m6g.xlarge": Decimal("0.154"),
    "c6g.4xlarge": Decimal("0.544"),
}
COMPLETE = [launch.launch_id for launch in DEMO_LAUNCHES if launch.status == "COMPLETE"]


@pytest.fixture
def lake(aws, airflow_db):
    config = settings().pricing
    clients = SimpleNamespace(**{s: aws.client(s) for s in ("batch", "ecs", "ec2", "fsx", "iam", "dynamodb")})
    aws.s3.create_bucket(Bucket=split_uri(settings().reports_uri)[0])
    return SimpleNamespace(aws=aws, clients=clients, table=config.launches_table, dynamodb=clients.dynamodb)


def seed(lake, launch_list=DEMO_LAUNCHES):
    return {
        item["launch_id"]: item
        for item in seed_launches(lake.clients, lake.dynamodb, lake.table, launches=launch_list)
    }


def items(lake) -> dict[str, dict]:
    return {
        item["launch_id"]: item
        for item in map(from_item, lake.dynamodb.scan(TableName=lake.table, ConsistentRead=True)["Items"])
    }


def expected_instance_cost(ec2, launch_id: str) -> Decimal:
    """Per instance (the seed tags each with its launch): EC2's launch and termination times, per-second
    billing with the 60 s minimum, at the On-Demand rate above or (Spot) the snapshot's last price for the
    type and zone before the run."""
    history = json.loads((REPO_ROOT / "include/pricing/spot_price_history.json").read_text())[
        "SpotPriceHistory"
    ]
    described = ec2.describe_instances(Filters=[{"Name": "tag:launch_id", "Values": [launch_id]}])[
        "Reservations"
    ]
    total = Decimal(0)
    for instance in (i for reservation in described for i in reservation["Instances"]):
        ended = datetime.strptime(
            instance["StateTransitionReason"].split("(")[1].rstrip(")"), "%Y-%m-%d %H:%M:%S %Z"
        ).replace(tzinfo=instance["LaunchTime"].tzinfo)
        seconds = max(60, math.ceil((ended - instance["LaunchTime"]).total_seconds()))
        if instance.get("InstanceLifecycle") == "spot":
            zone = instance["Placement"]["AvailabilityZone"]
            rate = Decimal(
                max(
                    (
                        r
                        for r in history
                        if r["InstanceType"] == instance["InstanceType"] and r["AvailabilityZone"] == zone
                    ),
                    key=lambda r: r["Timestamp"],
                )["SpotPrice"]
            )
        else:
            rate = ON_DEMAND[instance["InstanceType"]]
        total += rate * seconds / 3600
    return total


def test_every_complete_launch_is_priced_once_written_back_and_reported(lake):
    seed(lake)
    run = run_repo_dag("benchmark_pricing")
    states = task_states(run)
    assert states["select_launches[-1]"] == "success" and states["build_report[-1]"] == "success"
    assert sorted(k for k, v in states.items() if k.startswith("price_launch") and v == "success") == [
        f"price_launch[{n}]" for n in range(len(COMPLETE))
    ]

    stored = items(lake)
    for launch_id in COMPLETE:
        launch = stored[launch_id]
        costs = [Decimal(launch[name]) for name in ("instance_cost", "volume_cost", "filesystem_cost")]
        assert all(len(launch[name].split(".")[1]) == 4 for name in launches.COST_ATTRIBUTES)
        assert Decimal(launch["total_cost"]) == sum(costs) and all(c > 0 for c in costs[:2])
        assert (launch["currency"], launch["price_source"], launch["price_date"]) == (
            "USD",
            "snapshot:include/pricing",
            "2026-11-23T00:00:00Z",
        )
        demo = next(d for d in DEMO_LAUNCHES if d.launch_id == launch_id)
        assert launch["instance_types"] == sorted({i.instance_type for i in demo.instances})
        assert (Decimal(launch["filesystem_cost"]) > 0) == (demo.lustre is not None)
        oracle = expected_instance_cost(lake.clients.ec2, launch_id)
        assert launch["instance_cost"] == str(oracle.quantize(Decimal("0.0001"), "ROUND_HALF_UP"))
        assert "pricing_error" not in launch
    for launch_id in ("germline-wgs-0004", "rnaseq-quant-0004"):  # RUNNING, FAILED
        assert not set(launches.COST_ATTRIBUTES) & set(stored[launch_id])

    report = run.get_task_instance("build_report").xcom_pull(task_ids="build_report")
    assert report["counts"] == {"priced": len(COMPLETE), "already_priced": 0, "failed": 0}
    bucket, key = split_uri(report["comparison_csv"])
    rows = list(
        csv.DictReader(io.StringIO(lake.aws.s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()))
    )
    by_family = {(r["workflow_type"], r["group"]): r for r in rows if r["group_by"] == "family"}
    assert by_family[("rnaseq-quant", "m6g")]["runs"] == "1"
    assert sum(int(r["runs"]) for r in by_family.values()) == len(COMPLETE)
    graviton = {(r["workflow_type"], r["group"]) for r in rows if r["group_by"] == "graviton_vs_x86"}
    assert graviton == {(w, a) for w in ("germline-wgs", "rnaseq-quant") for a in ("arm64", "x86_64")}
    bucket, key = split_uri(report["comparison_chart"])
    chart = lake.aws.s3.get_object(Bucket=bucket, Key=key)
    assert chart["ContentType"] == "image/png" and chart["Body"].read()[:8] == b"\x89PNG\r\n\x1a\n"

    # The rerun finds nothing to price: no launch changes, no report is written.
    before = items(lake)
    rerun = run_repo_dag("benchmark_pricing")
    rerun_states = task_states(rerun)
    assert rerun_states["build_report[-1]"] == "skipped" and rerun.state == "success"
    assert items(lake) == before


def test_launches_that_cannot_be_priced_get_the_reason_and_are_retried(lake):
    seed(
        lake,
        (
            DemoLaunch(
                "rnaseq-quant-0100", "rnaseq-quant", "COMPLETE", (DemoInstance("m5.xlarge"),), volumes=(GP2,)
            ),
            # No price for m7i.xlarge in the snapshot.
            DemoLaunch("rnaseq-quant-0101", "rnaseq-quant", "COMPLETE", (DemoInstance("m7i.xlarge"),)),
        ),
    )
    gone = dict(
        items(lake)["rnaseq-quant-0100"], launch_id="germline-wgs-0100", batch_job_ids=["no-such-job"]
    )
    launches.put_launch(lake.dynamodb, lake.table, gone)

    run = run_repo_dag("benchmark_pricing")
    assert run.state == "success"
    stored = items(lake)
    assert "pricing_error" not in stored["rnaseq-quant-0100"] and stored["rnaseq-quant-0100"]["total_cost"]
    unpriced = stored["rnaseq-quant-0101"]
    assert (
        unpriced["pricing_error"]
        == "no price for AmazonEC2 instance m7i.xlarge in us-east-1 in snapshot:include/pricing"
    )
    assert "total_cost" not in unpriced and unpriced["pricing_attempts"] == 1
    assert "no-such-job" in stored["germline-wgs-0100"]["pricing_error"]
    assert "total_cost" not in stored["germline-wgs-0100"]
    report = run.get_task_instance("build_report").xcom_pull(task_ids="build_report")
    assert report["counts"] == {"priced": 1, "already_priced": 0, "failed": 2}
    assert {f["launch_id"] for f in report["failed"]} == {"rnaseq-quant-0101", "germline-wgs-0100"}

    # The next run tries them again (and only them).
    again = run_repo_dag("benchmark_pricing")
    stored = items(lake)
    assert stored["rnaseq-quant-0101"]["pricing_attempts"] == 2
    assert {ti.map_index for ti in again.get_task_instances() if ti.task_id == "price_launch"} == {0, 1}


def test_two_concurrent_runs_price_each_launch_once(lake):
    seed(lake)
    dynamodb = AtomicWrites(lake.dynamodb)
    outcomes: list[dict] = []
    barrier = threading.Barrier(2)

    def price_all():
        pricer = Pricer(
            settings().pricing, lambda service, region: lake.aws.client(service, region=region), dynamodb
        )
        barrier.wait()
        for launch_id in COMPLETE:
            outcomes.append(pricer.price_and_record(launch_id))

    threads = [threading.Thread(target=price_all) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for launch_id in COMPLETE:
        mine = sorted(o["outcome"] for o in outcomes if o["launch_id"] == launch_id)
        assert mine == ["already_priced", "priced"], (launch_id, mine)
    stored = items(lake)
    assert all(stored[launch_id]["total_cost"] for launch_id in COMPLETE)


def test_a_bad_launch_ids_param_fails_before_anything_is_written(lake, capfd):
    seed(lake)
    before = items(lake)
    run = run_repo_dag(
        "benchmark_pricing",
        run_conf={"launch_ids": ["germline-wgs-0001", "no-such-launch", "germline-wgs-0004"]},
    )
    states = task_states(run)
    assert states["select_launches[-1]"] == "failed" and run.state == "failed"
    assert items(lake) == before
    written = lake.aws.s3.list_objects_v2(Bucket=split_uri(settings().reports_uri)[0]).get("Contents", [])
    assert not any("benchmark_pricing" in obj["Key"] for obj in written)
    output = "".join(capfd.readouterr())
    assert "no-such-launch: not in workflow_launches" in output
    assert "germline-wgs-0004: status RUNNING, not COMPLETE" in output


def test_the_launch_ids_param_prices_only_those(lake):
    seed(lake)
    run = run_repo_dag("benchmark_pricing", run_conf={"launch_ids": ["rnaseq-quant-0002"]})
    assert run.state == "success"
    priced = {launch_id for launch_id, launch in items(lake).items() if "total_cost" in launch}
    assert priced == {"rnaseq-quant-0002"}


def test_fresh_launches_go_before_the_ones_that_failed_to_price(aws):
    """A pile of unpriceable launches (oldest first in the index) must not starve new ones."""
    dynamodb, table = aws.client("dynamodb"), "it_launch_order"
    launches.ensure_launches_table(dynamodb, table)
    for number in range(4):
        record = {
            "launch_id": f"l-{number}",
            "status": "COMPLETE",
            "completed_at": f"2026-11-2{number}T00:00:00+00:00",
        }
        launches.put_launch(dynamodb, table, record)
    launches.put_launch(
        dynamodb, table, {"launch_id": "l-9", "status": "RUNNING", "started_at": "2026-11-20"}
    )
    for launch_id in ("l-0", "l-1"):
        assert launches.record_error(dynamodb, table, launch_id, "no price for x9.huge")
    assert launches.write_cost(dynamodb, table, "l-3", {"total_cost": "1.0000"})

    assert [launch["launch_id"] for launch in launches.unpriced_launches(dynamodb, table, 1)] == ["l-2"]
    assert [launch["launch_id"] for launch in launches.unpriced_launches(dynamodb, table, 3)] == [
        "l-2",
        "l-0",
        "l-1",
    ]
    # priced once: neither a second cost nor an error is written over it
    assert not launches.write_cost(dynamodb, table, "l-3", {"total_cost": "2.0000"})
    assert not launches.record_error(dynamodb, table, "l-3", "late error")
    assert launches.get_launch(dynamodb, table, "l-3")["total_cost"] == "1.0000"
    assert "pricing_error" not in launches.get_launch(dynamodb, table, "l-3")


def test_the_comparison_reads_only_its_attributes_and_compares_as_the_whole_items_do(aws):
    """``completed_launches`` projects (the resource ids and cost parts stay in DynamoDB); the comparison
    of what it returns equals the comparison of the whole items, read independently with a Scan."""
    from dataplatform.pricing.report import compare

    dynamodb, table = aws.client("dynamodb"), "it_launch_projection"
    launches.ensure_launches_table(dynamodb, table)
    for number, (workflow, instance) in enumerate([("wgs", "m6g.xlarge"), ("wgs", "m6i.xlarge")] * 3):
        launch_id = f"l-{number}"
        record = {
            "launch_id": launch_id,
            "status": "COMPLETE",
            "workflow_type": workflow,
            "started_at": f"2026-11-2{number}T00:00:00+00:00",
            "completed_at": f"2026-11-2{number}T0{number + 1}:00:00+00:00",
            "instance_ids": [f"i-{number:017x}"],
        }
        launches.put_launch(dynamodb, table, record)
        if number < 4:
            cost = {"total_cost": f"{number + 1}.5000", "instance_cost": f"{number + 1}.5000"}
            cost |= {"currency": "USD", "instance_types": [instance]}
            assert launches.write_cost(dynamodb, table, launch_id, cost)
    assert launches.record_error(dynamodb, table, "l-4", "no price for x9.huge")
    start, end = (
        datetime.fromisoformat("2026-11-20T00:00:00+00:00"),
        datetime.fromisoformat("2026-12-01T00:00:00+00:00"),
    )

    read = launches.completed_launches(dynamodb, table, start.isoformat(), end.isoformat())
    whole = [from_item(item) for item in dynamodb.scan(TableName=table)["Items"]]

    assert {key for launch in read for key in launch} <= {"status", *launches.COMPARISON_ATTRIBUTES}
    priced = [launch for launch in whole if launch.get("total_cost")]
    assert len(priced) == 4 and all(
        "instance_ids" in launch and "instance_cost" in launch for launch in priced
    )
    projected, complete = compare(read, start, end), compare(whole, start, end)
    assert projected == complete
    assert (projected.launches, projected.unpriced, projected.pricing_errors) == (4, 1, 1)


def test_a_resent_pricing_write_counts_once_and_reports_its_own_success(aws):
    """Found by make chaos (read_timeout): a resent ``ADD pricing_attempts`` counted one attempt twice,
    and a resent cost write reported the launch as priced by another run."""
    dynamodb, table = aws.client("dynamodb"), "it_launch_resend"
    launches.ensure_launches_table(dynamodb, table)
    for launch_id in ("l-0", "l-1"):
        record = {"launch_id": launch_id, "status": "COMPLETE", "completed_at": "2026-11-20T00:00:00+00:00"}
        launches.put_launch(dynamodb, table, record)
    resending = ResendingClient(dynamodb, "update_item")

    assert launches.record_error(resending, table, "l-0", "no price for x9.huge")
    assert launches.record_error(resending, table, "l-0", "no price for x9.huge")
    assert launches.get_launch(dynamodb, table, "l-0")["pricing_attempts"] == 2

    assert launches.write_cost(resending, table, "l-1", {"total_cost": "1.0000"})
    assert launches.get_launch(dynamodb, table, "l-1")["total_cost"] == "1.0000"
    assert not launches.write_cost(resending, table, "l-1", {"total_cost": "2.0000"})
    assert launches.get_launch(dynamodb, table, "l-1")["total_cost"] == "1.0000"

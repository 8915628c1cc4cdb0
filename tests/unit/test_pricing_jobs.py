"""Cost records of the platform's own Spark jobs, from real-shaped EMR and EMR Serverless responses (moto
lists no instances or fleets for a cluster and reports no billed utilization for a job run)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from dataplatform.config import REPO_ROOT
from dataplatform.pricing import jobs
from dataplatform.pricing.prices import PriceCatalog, SnapshotPriceList
from dataplatform.pricing.resources import PricingError
from dataplatform.spark import SparkSizing

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
REGION = "us-east-1"


@pytest.fixture
def catalog():
    return PriceCatalog(SnapshotPriceList(REPO_ROOT / "include" / "pricing"), "snapshot")


def spot(*_args):
    return [(T0 - timedelta(days=1), Decimal("0.15"))]


class FakeEmr:
    def __init__(self, instances=(), fleets=(), collection="INSTANCE_FLEET", steps=None):
        self.instances, self.fleets, self.collection, self.steps = (
            list(instances),
            list(fleets),
            collection,
            steps or {},
        )

    def describe_cluster(self, ClusterId):
        return {
            "Cluster": {
                "Id": ClusterId,
                "InstanceCollectionType": self.collection,
                "Ec2InstanceAttributes": {"Ec2AvailabilityZone": "us-east-1a"},
                "Status": {"Timeline": {"CreationDateTime": T0, "EndDateTime": T0 + timedelta(hours=2)}},
            }
        }

    def get_paginator(self, name):
        assert name == "list_instances"
        instances = self.instances

        class Pages:
            def paginate(self, ClusterId):
                # Two pages, as ListInstances returns them for bigger clusters.
                return [{"Instances": instances[:1]}, {"Instances": instances[1:]}]

        return Pages()

    def list_instance_fleets(self, ClusterId):
        return {"InstanceFleets": self.fleets}

    def describe_step(self, ClusterId, StepId):
        start, end = self.steps[StepId]
        return {"Step": {"Status": {"Timeline": {"StartDateTime": start, "EndDateTime": end}}}}


def emr_instance(instance_id, instance_type, market, hours_from, hours_to):
    return {
        "Id": f"ci-{instance_id}",
        "Ec2InstanceId": instance_id,
        "InstanceType": instance_type,
        "Market": market,
        "Status": {
            "State": "TERMINATED",
            "Timeline": {
                "CreationDateTime": T0 + timedelta(hours=hours_from),
                "EndDateTime": T0 + timedelta(hours=hours_to),
            },
        },
    }


def test_a_transient_cluster_costs_every_instance_for_its_life(catalog):
    emr = FakeEmr(
        [
            emr_instance("i-1", "m5.xlarge", "ON_DEMAND", 0, 2),  # 2 h x (0.192 + 0.048) = 0.48
            emr_instance("i-2", "m5.2xlarge", "ON_DEMAND", 0, 2),  # 2 h x (0.384 + 0.096) = 0.96
            emr_instance("i-3", "r5.2xlarge", "SPOT", 0.5, 1.5),  # 1 h x 0.15 Spot + 1 h x 0.126 = 0.276
        ]
    )
    record = jobs.emr_job_cost_record(emr, "j-1", catalog, spot, REGION)
    assert record == {
        "backend": "emr",
        "resource_id": "j-1",
        "instances": 3,
        "instance_hours": "5.0000",
        "ec2_cost": "1.3020",  # 0.384 + 0.768 + 0.15
        "emr_cost": "0.4140",  # 0.096 + 0.192 + 0.126
        "total_cost": "1.7160",
        "currency": "USD",
        "estimated": False,
    }


def test_steps_on_a_long_lived_cluster_cost_the_instances_while_they_ran(catalog):
    emr = FakeEmr(
        [emr_instance("i-1", "m5.xlarge", "ON_DEMAND", -100, 100)],
        steps={
            "s-1": (T0, T0 + timedelta(minutes=30)),
            "s-2": (T0 + timedelta(minutes=20), T0 + timedelta(hours=1)),
        },
    )
    record = jobs.emr_job_cost_record(emr, "j-2", catalog, spot, REGION, step_ids=["s-1", "s-2"])
    # the steps span 1 h: 0.192 + 0.048
    assert (record["instance_hours"], record["total_cost"]) == ("1.0000", "0.2400")


def test_without_instance_records_the_fleets_capacity_is_priced_at_the_cheapest_type(catalog):
    fleets = [
        {"Id": "if-1", "Name": "master", "TargetOnDemandCapacity": 1, "TargetSpotCapacity": 0,
         "InstanceTypeSpecifications": [{"InstanceType": "m6i.xlarge"}, {"InstanceType": "m5.xlarge"}]},
        {"Id": "if-3", "Name": "task", "TargetOnDemandCapacity": 0, "TargetSpotCapacity": 8,
         "InstanceTypeSpecifications": [
             {"InstanceType": "r5.2xlarge", "WeightedCapacity": 2},  # 0.252 per unit
             {"InstanceType": "m5.2xlarge", "WeightedCapacity": 2},  # 0.192 per unit: taken
             {"InstanceType": "m6i.4xlarge", "WeightedCapacity": 4},  # no price in the snapshot
         ]},
    ]  # fmt: skip
    record = jobs.emr_job_cost_record(FakeEmr(fleets=fleets), "j-3", catalog, spot, REGION)
    # m6i.xlarge has no price: master is 1 x m5.xlarge; task 8 units / 2 = 4 x m5.2xlarge Spot; 2 h each
    # EC2: 2 x 0.192 + 4 x 2 x 0.15 = 1.584; EMR: 2 x 0.048 + 4 x 2 x 0.096 = 0.864
    assert (record["instances"], record["estimated"]) == (5, True)
    assert (record["ec2_cost"], record["emr_cost"], record["total_cost"]) == ("1.5840", "0.8640", "2.4480")
    unpriceable = [{**fleets[0], "InstanceTypeSpecifications": [{"InstanceType": "m6i.xlarge"}]}]
    with pytest.raises(PricingError, match=r"fleet master: no price for any of \['m6i.xlarge'\]"):
        jobs.emr_job_cost_record(FakeEmr(fleets=unpriceable), "j-4", catalog, spot, REGION)


class FakeServerless:
    def __init__(self, job_run, architecture="ARM64"):
        self.job_run, self.architecture = job_run, architecture

    def get_application(self, applicationId):
        return {"application": {"applicationId": applicationId, "architecture": self.architecture}}

    def get_job_run(self, applicationId, jobRunId):
        return {"jobRun": {"jobRunId": jobRunId, **self.job_run}}


def test_emr_serverless_prices_the_billed_utilization_at_the_application_architecture(catalog):
    billed = {
        "billedResourceUtilization": {
            "vCPUHour": 404 * 0.74,
            "memoryGBHour": 1616 * 0.74,
            "storageGBHour": 18000 * 0.74,
        }
    }
    record = jobs.serverless_job_cost_record(
        FakeServerless(billed), "app-1", "run-1", catalog, REGION, SparkSizing()
    )
    # reference 06's Graviton2 run
    assert (record["vcpu_cost"], record["memory_cost"], record["storage_cost"]) == (
        "12.5844",
        "5.5343",
        "1.4785",
    )
    assert (record["total_cost"], record["architecture"], record["estimated"]) == ("19.5972", "arm64", False)


def test_emr_serverless_without_billed_utilization_prices_the_sizing_for_the_duration(catalog):
    run = {"startedAt": T0, "endedAt": T0 + timedelta(minutes=30)}
    sizing = SparkSizing(
        driver_cores=1, driver_memory="2g", executor_cores=2, executor_memory="4g", executor_instances=3
    )
    record = jobs.serverless_job_cost_record(
        FakeServerless(run, "X86_64"), "app-1", "run-2", catalog, REGION, sizing
    )
    # 7 vCPU and 14 GB for 0.5 h: 3.5 x 0.052624 + 7 x 0.0057785 = 0.184184 + 0.0404495
    assert (record["vcpu_cost"], record["memory_cost"], record["storage_cost"]) == (
        "0.1842",
        "0.0404",
        "0.0000",
    )
    assert (record["total_cost"], record["estimated"]) == ("0.2246", True)
    with pytest.raises(PricingError, match="no start and end time yet"):
        jobs.serverless_job_cost_record(FakeServerless({}), "app-1", "run-3", catalog, REGION, sizing)

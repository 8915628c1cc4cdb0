"""benchmark_pricing in a real Airflow (`airflow standalone`: scheduler, DAG processor, LocalExecutor)
driven through the REST API: the scheduled run that unpausing starts prices every COMPLETE demo launch,
one mapped task per launch named after it; a manual run for an already priced launch changes nothing; bad
params are refused by the API or fail the run before anything is written."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dataplatform import aws as aws_clients
from dataplatform.config import settings
from dataplatform.devstack.standalone import AirflowApiError, StandaloneAirflow
from dataplatform.dynamodb import from_item
from dataplatform.pricing.sample import DEMO_LAUNCHES, seed_launches
from dataplatform.s3.objects import split_uri
from tests.e2e.airflow_api import (
    dag_runs,
    describe_run,
    standalone_airflow,
    task_instances,
    unpause_after_its_scheduled_run,
    wait_for_run,
)

pytestmark = pytest.mark.e2e

DAG_ID = "benchmark_pricing"
COMPLETE = sorted(launch.launch_id for launch in DEMO_LAUNCHES if launch.status == "COMPLETE")


@pytest.fixture(scope="module")
def seeded(moto_server):
    moto_server.reset()
    aws_clients.client("s3").create_bucket(Bucket=split_uri(settings().reports_uri)[0])
    clients = SimpleNamespace(**{s: aws_clients.client(s) for s in ("batch", "ecs", "ec2", "fsx", "iam")})
    dynamodb = aws_clients.client("dynamodb")
    seed_launches(clients, dynamodb, settings().pricing.launches_table)
    return dynamodb


@pytest.fixture(scope="module")
def airflow(moto_server, seeded, tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-standalone-pricing")
    with standalone_airflow(home, moto_server.url) as server:
        unpause_after_its_scheduled_run(server, DAG_ID)
        yield server


def stored(dynamodb) -> dict[str, dict]:
    table = settings().pricing.launches_table
    return {
        item["launch_id"]: item
        for item in map(from_item, dynamodb.scan(TableName=table, ConsistentRead=True)["Items"])
    }


def trigger(airflow: StandaloneAirflow, conf: dict) -> dict:
    return airflow.api("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf})


def test_the_scheduled_run_prices_every_complete_launch(airflow, seeded):
    (scheduled,) = dag_runs(airflow, DAG_ID, "scheduled")
    assert scheduled["state"] == "success", describe_run(airflow, DAG_ID, scheduled["dag_run_id"])
    mapped = [
        t for t in task_instances(airflow, DAG_ID, scheduled["dag_run_id"]) if t["task_id"] == "price_launch"
    ]
    assert sorted(t["rendered_map_index"] for t in mapped) == COMPLETE
    items = stored(seeded)
    for launch_id in COMPLETE:
        launch = items[launch_id]
        parts = [launch["instance_cost"], launch["volume_cost"], launch["filesystem_cost"]]
        assert float(launch["total_cost"]) == pytest.approx(sum(map(float, parts)), abs=1e-9)
        assert float(launch["instance_cost"]) > 0 and launch["price_source"] == "snapshot:include/pricing"
    assert not any("total_cost" in items[i] for i in items if i not in COMPLETE)


def test_a_manual_run_for_a_priced_launch_changes_nothing(airflow, seeded):
    before = stored(seeded)
    run = trigger(airflow, {"launch_ids": [COMPLETE[0]]})
    done = wait_for_run(airflow, DAG_ID, run["dag_run_id"], timeout=240)
    assert done["state"] == "success", describe_run(airflow, DAG_ID, run["dag_run_id"])
    assert stored(seeded) == before


def test_bad_params_are_refused_or_fail_before_anything_is_written(airflow, seeded):
    before = stored(seeded)
    with pytest.raises(AirflowApiError) as refused:
        trigger(airflow, {"launch_ids": COMPLETE[0]})
    assert refused.value.status_code in (400, 422), refused.value

    run = trigger(airflow, {"launch_ids": [COMPLETE[0], "no-such-launch"]})
    done = wait_for_run(airflow, DAG_ID, run["dag_run_id"], timeout=180)
    assert done["state"] == "failed"
    states = {t["task_id"]: t for t in task_instances(airflow, DAG_ID, run["dag_run_id"])}
    assert states["select_launches"]["state"] == "failed" and states["select_launches"]["try_number"] == 1
    assert stored(seeded) == before

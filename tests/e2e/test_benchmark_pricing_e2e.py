"""benchmark_pricing in a real Airflow (`airflow standalone`: scheduler, DAG processor, LocalExecutor)
driven through the REST API: the scheduled run that unpausing starts prices every COMPLETE demo launch,
one mapped task per launch named after it; a manual run for an already priced launch changes nothing; bad
params are refused by the API or fail the run before anything is written; a success after a failed run
alerts the recovery from the DAG processor (the production path of the DAG's success callback).

The stack runs with aws.yaml's Airflow deadlines (``tests/deadline_config.py``; local.yaml has none, for
``dag.test()``'s sake): every pricing run here succeeds within its deadline under the scheduler, and a run
queued past its deadline is alerted by the triggerer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from dataplatform import aws as aws_clients
from dataplatform.config import settings
from dataplatform.devstack.seed import receive_alerts, seed_alert_topic
from dataplatform.devstack.standalone import AirflowApiError, StandaloneAirflow
from dataplatform.dynamodb import from_item
from dataplatform.pricing.sample import DEMO_LAUNCHES, seed_launches
from dataplatform.s3.objects import split_uri
from tests.deadline_config import local_config_with_aws_deadlines
from tests.e2e.airflow_api import (
    dag_runs,
    describe_run,
    standalone_airflow,
    task_instances,
    unpause_after_its_scheduled_run,
    wait_for,
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
    sqs = aws_clients.client("sqs")
    queue = seed_alert_topic(aws_clients.client("sns"), sqs, settings().alerts.sns_topic_arn)
    return SimpleNamespace(dynamodb=dynamodb, alerts=lambda: receive_alerts(sqs, queue))


@pytest.fixture(scope="module")
def airflow(moto_server, seeded, tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-standalone-pricing")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DATAPLATFORM_CONFIG", str(local_config_with_aws_deadlines(home)))
        with standalone_airflow(home, moto_server.url) as server:
            unpause_after_its_scheduled_run(server, DAG_ID)
            yield server


def stored(dynamodb) -> dict[str, dict]:
    table = settings().pricing.launches_table
    return {
        item["launch_id"]: item
        for item in map(from_item, dynamodb.scan(TableName=table, ConsistentRead=True)["Items"])
    }


def trigger(airflow: StandaloneAirflow, conf: dict, logical_date: datetime | None = None) -> dict:
    shown = logical_date.isoformat() if logical_date else None
    return airflow.api("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": shown, "conf": conf})


def test_the_scheduled_run_prices_every_complete_launch(airflow, seeded):
    (scheduled,) = dag_runs(airflow, DAG_ID, "scheduled")
    assert scheduled["state"] == "success", describe_run(airflow, DAG_ID, scheduled["dag_run_id"])
    mapped = [
        t for t in task_instances(airflow, DAG_ID, scheduled["dag_run_id"]) if t["task_id"] == "price_launch"
    ]
    assert sorted(t["rendered_map_index"] for t in mapped) == COMPLETE
    items = stored(seeded.dynamodb)
    for launch_id in COMPLETE:
        launch = items[launch_id]
        parts = [launch["instance_cost"], launch["volume_cost"], launch["filesystem_cost"]]
        assert float(launch["total_cost"]) == pytest.approx(sum(map(float, parts)), abs=1e-9)
        assert float(launch["instance_cost"]) > 0 and launch["price_source"] == "snapshot:include/pricing"
    assert not any("total_cost" in items[i] for i in items if i not in COMPLETE)


def test_a_manual_run_for_a_priced_launch_changes_nothing(airflow, seeded):
    before = stored(seeded.dynamodb)
    run = trigger(airflow, {"launch_ids": [COMPLETE[0]]})
    done = wait_for_run(airflow, DAG_ID, run["dag_run_id"], timeout=240)
    assert done["state"] == "success", describe_run(airflow, DAG_ID, run["dag_run_id"])
    assert stored(seeded.dynamodb) == before


def test_bad_params_are_refused_or_fail_before_anything_is_written(airflow, seeded):
    before = stored(seeded.dynamodb)
    with pytest.raises(AirflowApiError) as refused:
        trigger(airflow, {"launch_ids": COMPLETE[0]})
    assert refused.value.status_code in (400, 422), refused.value

    run = trigger(airflow, {"launch_ids": [COMPLETE[0], "no-such-launch"]})
    done = wait_for_run(airflow, DAG_ID, run["dag_run_id"], timeout=180)
    assert done["state"] == "failed"
    states = {t["task_id"]: t for t in task_instances(airflow, DAG_ID, run["dag_run_id"])}
    assert states["select_launches"]["state"] == "failed" and states["select_launches"]["try_number"] == 1
    assert stored(seeded.dynamodb) == before


def test_a_success_after_a_failed_run_alerts_the_recovery_from_the_dag_processor(airflow, seeded):
    """Under a scheduler the DAG's success callback runs in the DAG processor and asks for the run before
    it over the task SDK's supervisor channel (``dag.test()`` takes another path: tests/integration).
    Runs with a logical date: a run without one has no previous run to recover from."""
    # Logical dates just after the scheduled run's (the schedule is every 15 minutes, from the unpause):
    # the failed run is the one before the recovering run.
    (scheduled,) = dag_runs(airflow, DAG_ID, "scheduled")
    after = datetime.fromisoformat(scheduled["logical_date"].replace("Z", "+00:00"))
    received: list[dict] = []
    seeded.alerts()  # what earlier tests' runs sent

    failed = trigger(airflow, {"launch_ids": ["no-such-launch"]}, after + timedelta(seconds=1))
    assert wait_for_run(airflow, DAG_ID, failed["dag_run_id"], timeout=180)["state"] == "failed"
    recovered = trigger(airflow, {"launch_ids": [COMPLETE[0]]}, after + timedelta(seconds=2))
    done = wait_for_run(airflow, DAG_ID, recovered["dag_run_id"], timeout=240)
    assert done["state"] == "success", describe_run(airflow, DAG_ID, recovered["dag_run_id"])

    def both_alerts() -> tuple[list[dict], list[dict]] | None:
        received.extend(seeded.alerts())
        found = [
            [
                a
                for a in received
                if a["subject"].endswith(event) and f"Run: {run['dag_run_id']}" in a["message"]
            ]
            for event, run in (
                ("RECOVERED: first success after a failed run", recovered),
                ("run FAILED", failed),
            )
        ]
        return found if all(found) else None

    recoveries, failures = wait_for(both_alerts, timeout=90, what="the run-failed and recovery alerts")
    assert [a["subject"] for a in recoveries] == [
        "[local] benchmark_pricing: RECOVERED: first success after a failed run"
    ]
    assert [a["subject"] for a in failures] == ["[local] benchmark_pricing: run FAILED"]
    # One recovery in all: the earlier successes (the scheduled run, the manual one) followed no failure.
    assert sum("RECOVERED" in a["subject"] for a in received) == 1


def test_a_run_queued_past_its_deadline_is_alerted_by_the_triggerer(airflow, seeded):
    """recon_stateless's deadline is 30 minutes after its logical date (aws.yaml). A run triggered for two
    hours ago while the DAG is paused stays queued: the scheduler finds its deadline passed and the
    triggerer runs the callback, which publishes through the one alert path."""

    def parsed() -> dict | None:
        try:
            return airflow.api("GET", "/dags/recon_stateless")
        except AirflowApiError as exc:
            if exc.status_code == 404:
                return None
            raise

    assert wait_for(parsed, 120, "recon_stateless to be parsed", 2.0)["is_paused"] is True
    logical_date = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    run = airflow.api(
        "POST", "/dags/recon_stateless/dagRuns", json={"logical_date": logical_date.isoformat(), "conf": {}}
    )
    received: list[dict] = []

    def deadline_alerts() -> list[dict]:
        received.extend(seeded.alerts())
        return [a for a in received if "DEADLINE MISSED" in a["subject"]]

    (alert,) = wait_for(deadline_alerts, timeout=120, what="the DEADLINE MISSED alert")
    assert (
        alert["subject"]
        == "[local] recon_stateless: DEADLINE MISSED: reconciliation more than 30 minutes behind"
    )
    assert f"Run: {run['dag_run_id']}" in alert["message"].splitlines()
    assert airflow.api("GET", f"/dags/recon_stateless/dagRuns/{run['dag_run_id']}")["state"] == "queued"

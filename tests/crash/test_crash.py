"""Crash points in ``make test`` (kept to two pipelines: each costs two whole pipeline runs): the
uninterrupted run and a kill right after the last AWS call of one task (the call took effect, the task
never learnt it), followed by the retry and the rest of the run, must end in the uninterrupted run's state
(nothing lost, nothing duplicated). ``make crash`` runs every crash point of every pipeline
(``python -m tests.crash``); the bugs it found have their own regression tests beside the code's tests."""

from __future__ import annotations

import pytest

from tests.crash.harness import CrashPoint, campaign
from tests.crash.session import crash_session, pipeline

pytestmark = [pytest.mark.integration, pytest.mark.crash]

# pipeline -> the task whose last AWS call is the crash point here.
QUICK = {"glue": "load_partitions[web_events]", "gdpr": "claim_requests"}


@pytest.fixture(scope="module")
def crash(moto_server, tmp_path_factory):
    with crash_session(moto_server, tmp_path_factory.mktemp("crash")) as session:
        yield session


@pytest.mark.parametrize("name", sorted(QUICK))
def test_a_task_killed_after_its_last_aws_call_ends_as_an_uninterrupted_run(crash, name):
    runner, lake = crash

    def last_call(points):
        last = max((p for p in points if p.step == QUICK[name] and p.item == 0), key=lambda p: p.k)
        return [CrashPoint(last.step, last.k, "after")]

    outcomes = campaign(runner, pipeline(name), lake, per_step=2, spark_per_step=0, select=last_call)

    assert len(outcomes) == 1 and outcomes[0].killed, [o.point.label() for o in outcomes]
    failures = {o.point.label(): o.error or o.difference for o in outcomes if not o.survived}
    assert not failures, failures

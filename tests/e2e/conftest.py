"""One `make up` stack shared by the e2e tests that only need a running stack (``running_up_stack``):
starting one takes minutes, so the README-command test and the lake-health page's browser test use the
same. Its tests run one after the other, where the first of them would (``pytest_collection_modifyitems``),
and the stack is stopped right after the last of them, with the same checks as every stop of `make up`
(nothing left running, ports free: ``assert_stopped_completely``), so it never idles beside the other
e2e modules' own stacks. That stop is one of `make up`'s stop tests: Ctrl-C, then every stop signal again
while it cleans up.

With ``DATAPLATFORM_E2E_EMR_POOL=1`` (the on-demand EMR pool test) the shared stack loads one more DAG
bundle than a user's, ``tests/e2e/dags`` (``E2E_DAG_BUNDLES``):
DAGs that exist for its tests only (``e2e_emr_cluster_pool``: a Spark job on transient EMR clusters,
where the stack's config runs Spark locally). The repository's ``dags/`` stay the ``dags-folder`` bundle.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.airflow_api import standalone_airflow
from tests.e2e.up_stack import BANNER_DONE, UpProcess, assert_stopped_completely, up_stack

SHARED = "running_up_stack"
_running: list[UpProcess] = []
LOCAL_AIRFLOW = "local_airflow"
_local_airflow: list[contextlib.ExitStack] = []
E2E_DAG_BUNDLES = {
    "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
        [
            {
                "name": "dags-folder",
                "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                "kwargs": {},
            },
            {
                "name": "e2e-dags",
                "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                "kwargs": {"path": str(Path(__file__).parent / "dags")},
            },
        ]
    )
}


@pytest.fixture(scope="session")
def running_up_stack():
    # The extra bundle only for the on-demand EMR pool test: every other test sees a user's stack.
    bundles = E2E_DAG_BUNDLES if os.environ.get("DATAPLATFORM_E2E_EMR_POOL") == "1" else None
    with up_stack(bundles) as stack:
        stack.wait_for_line(BANNER_DONE)
        _running.append(stack)
        yield stack
        # When its last user is the run's last test, pytest finalizes the session's fixtures inside that
        # test's teardown, before the hook below gets to stop it: the same stop here, not up_stack's SIGKILL.
        if stack in _running:
            _running.remove(stack)
            stop_as_a_user_does(stack)


@pytest.fixture(scope="session")
def local_airflow(moto_server, tmp_path_factory):
    """One `airflow standalone` with the local config for the e2e modules that need no config of their
    own (Glue, Iceberg, reconciliation): a start costs about a minute. Each module resets moto, seeds its
    lake and pauses the DAGs it unpaused when it is done; the Airflow is stopped right after the last test
    that uses it (``pytest_runtest_teardown``), not left idling beside the integration tests."""
    with contextlib.ExitStack() as stack:
        _local_airflow.append(stack)
        home = tmp_path_factory.mktemp("airflow-standalone-local")
        yield stack.enter_context(standalone_airflow(home, moto_server.url))


def _uses(item, fixture: str) -> bool:
    return fixture in getattr(item, "fixturenames", ())


def _uses_shared(item) -> bool:
    return _uses(item, SHARED)


def pytest_collection_modifyitems(items):
    """The tests of each shared stack one after the other, where the first of them would run."""
    for fixture in (SHARED, LOCAL_AIRFLOW):
        users = [item for item in items if _uses(item, fixture)]
        if not users:
            continue
        others = [item for item in items if not _uses(item, fixture)]
        first = items.index(users[0])
        before = [item for item in items[:first] if not _uses(item, fixture)]
        items[:] = before + users + others[len(before) :]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """After the last test on a shared stack and its module's fixtures (which may still call it), stop it.
    `make up`'s: as a user does (Ctrl-C: SIGINT to the terminal's process group), every stop signal again
    while it cleans up (an impatient user, a terminal closed meanwhile), and check it stopped completely
    and said it was already stopping."""
    result = yield
    if _local_airflow and _uses(item, LOCAL_AIRFLOW) and not (nextitem and _uses(nextitem, LOCAL_AIRFLOW)):
        _local_airflow.pop().close()
    if _running and _uses_shared(item) and not (nextitem and _uses_shared(nextitem)):
        stop_as_a_user_does(_running.pop())
    return result


def stop_as_a_user_does(stack: UpProcess) -> None:
    """Ctrl-C (SIGINT to the group), then every stop signal again while it cleans up; nothing left."""
    stack.signal_group(signal.SIGINT)
    stack.wait_for_line(": stopping airflow")
    for _ in range(3):
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            stack.signal_group(signum)
        time.sleep(0.3)
    assert_stopped_completely(stack)
    assert "already stopping" in stack.output

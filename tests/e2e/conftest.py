"""One `make up` stack shared by the e2e tests that only need a running stack (``running_up_stack``):
starting one takes minutes, so the README-command test and the lake-health page's browser test use the
same. Its tests run one after the other, where the first of them would (``pytest_collection_modifyitems``),
and the stack is stopped right after the last of them, with the same checks as every stop of `make up`
(nothing left running, ports free: ``assert_stopped_completely``), so it never idles beside the other
e2e modules' own stacks.

With ``DATAPLATFORM_E2E_EMR_POOL=1`` (the on-demand EMR pool test) the shared stack loads one more DAG
bundle than a user's, ``tests/e2e/dags`` (``E2E_DAG_BUNDLES``):
DAGs that exist for its tests only (``e2e_emr_cluster_pool``: a Spark job on transient EMR clusters,
where the stack's config runs Spark locally). The repository's ``dags/`` stay the ``dags-folder`` bundle.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.e2e.up_stack import BANNER_DONE, UpProcess, assert_stopped_completely, up_stack

SHARED = "running_up_stack"
_running: list[UpProcess] = []
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


def _uses_shared(item) -> bool:
    return SHARED in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(items):
    users = [item for item in items if _uses_shared(item)]
    if not users:
        return
    others = [item for item in items if not _uses_shared(item)]
    first = items.index(users[0])
    before = [item for item in items[:first] if not _uses_shared(item)]
    items[:] = before + users + others[len(before) :]


def pytest_runtest_teardown(item, nextitem):
    """After the last test on the shared stack: stop it as a user does (Ctrl-C: SIGINT to the terminal's
    process group) and check it stopped."""
    if _running and _uses_shared(item) and not (nextitem and _uses_shared(nextitem)):
        stack = _running.pop()
        os.killpg(stack.process.pid, signal.SIGINT)
        assert_stopped_completely(stack)

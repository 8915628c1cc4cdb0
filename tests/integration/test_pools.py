"""The local stack's pools (``import_pools``, run by ``make demo``, ``make up`` and the e2e stacks) in a real
metadata database: an import over existing pools resizes them, never duplicates them. (A fresh database
getting them is checked by tests/e2e/test_glue_partition_loader_e2e.py.)"""

from __future__ import annotations

import os

import pytest

from dataplatform.config import settings
from dataplatform.devstack.airflow_env import import_pools, query_metadata_db

pytestmark = pytest.mark.integration


def stored_pools() -> list[tuple]:
    return query_metadata_db(
        dict(os.environ),
        "SELECT pool, slots, description, include_deferred FROM slot_pool "
        "WHERE pool IN ('spark_jobs', 'glue_api') ORDER BY pool",
    )


def test_importing_again_resizes_the_pools_without_duplicating_them(airflow_db):
    pools = settings().pools
    bigger = pools.model_copy(
        update={"glue_api": pools.glue_api.model_copy(update={"slots": pools.glue_api.slots + 3})}
    )
    import_pools(dict(os.environ), bigger)
    assert [(name, slots) for name, slots, _, _ in stored_pools()] == [
        ("glue_api", pools.glue_api.slots + 3),
        ("spark_jobs", pools.spark_jobs.slots),
    ]

    import_pools(dict(os.environ))  # the config's again: what the other tests of the session see
    assert stored_pools() == [
        ("glue_api", pools.glue_api.slots, pools.glue_api.description, False),
        ("spark_jobs", pools.spark_jobs.slots, pools.spark_jobs.description, True),
    ]

"""Glue's ConcurrentModificationException, which botocore leaves to the caller, is retried by every Glue
client of ``dataplatform.aws`` (found by ``make chaos``: it failed the Glue loader's try)."""

import pytest

from dataplatform.devstack.faults import FaultPlan

pytestmark = pytest.mark.integration


def test_glue_clients_retry_concurrent_modification(aws, moto_server):
    glue = aws.client("glue")
    glue.create_database(DatabaseInput={"Name": "conflicts_it"})
    moto_server.reset_fault_stats()
    moto_server.set_faults(FaultPlan(rate=0.5, seed=3, kinds=("glue_concurrent_modification",)))
    try:
        names = [glue.get_database(Name="conflicts_it")["Database"]["Name"] for _ in range(20)]
    finally:
        moto_server.set_faults(None)
    assert names == ["conflicts_it"] * 20
    assert moto_server.fault_stats()["faults_by_kind"]["glue_concurrent_modification"] >= 5

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
    wanted = [f"t{n:02d}" for n in range(20)]
    try:
        # Glue answers the exception to writes only (the endpoint injects it there): creates here.
        for name in wanted:
            glue.create_table(DatabaseName="conflicts_it", TableInput={"Name": name})
    finally:
        moto_server.set_faults(None)
    tables = glue.get_tables(DatabaseName="conflicts_it")["TableList"]
    assert sorted(table["Name"] for table in tables) == wanted
    assert moto_server.fault_stats()["faults_by_kind"]["glue_concurrent_modification"] >= 5

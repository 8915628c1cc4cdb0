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


def test_an_update_naming_an_older_table_version_is_refused_and_changes_nothing(aws):
    """Glue's optimistic concurrency, which the local endpoint adds to moto (``devstack/moto_glue.py``):
    without it, two Iceberg commits that race both succeed and the second drops the first."""
    import boto3
    from botocore.config import Config

    # No retries: the refusal itself is what is checked (the product's clients retry it).
    glue = boto3.client(
        "glue", endpoint_url=aws.url, region_name="us-east-1", config=Config(retries={"max_attempts": 1})
    )
    glue.create_database(DatabaseInput={"Name": "versions_it"})
    glue.create_table(DatabaseName="versions_it", TableInput={"Name": "t", "Parameters": {"v": "0"}})
    read = glue.get_table(DatabaseName="versions_it", Name="t")["Table"]["VersionId"]
    glue.update_table(
        DatabaseName="versions_it", TableInput={"Name": "t", "Parameters": {"v": "1"}}, VersionId=read
    )

    with pytest.raises(glue.exceptions.ConcurrentModificationException):
        glue.update_table(
            DatabaseName="versions_it", TableInput={"Name": "t", "Parameters": {"v": "2"}}, VersionId=read
        )

    assert glue.get_table(DatabaseName="versions_it", Name="t")["Table"]["Parameters"] == {"v": "1"}
    glue.update_table(DatabaseName="versions_it", TableInput={"Name": "t", "Parameters": {"v": "3"}})
    assert glue.get_table(DatabaseName="versions_it", Name="t")["Table"]["Parameters"] == {"v": "3"}

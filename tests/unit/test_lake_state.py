"""The comparison side of ``devstack.lake_state``: what counts as a difference, what is normalised away,
and the invariants of one state (the reading side runs against moto in ``make chaos``)."""

import pytest

from dataplatform.devstack import lake_state

pytestmark = pytest.mark.unit


def test_diff_names_the_path_of_every_differing_leaf():
    a = {"gdpr": {"requests": {"cust-000004": {"status": "COMPLETED"}}}, "glue": {"t": [1, 2]}}
    b = {"gdpr": {"requests": {"cust-000004": {"status": "IN_PROGRESS"}}}, "glue": {"t": [1, 2]}}
    assert lake_state.diff(a, b) == ["gdpr.requests.cust-000004.status: COMPLETED != IN_PROGRESS"]
    assert lake_state.diff(a, a) == []


def test_diff_counts_a_duplicated_list_item():
    lines = lake_state.diff({"rows": [{"id": 1}, {"id": 2}]}, {"rows": [{"id": 1}, {"id": 2}, {"id": 2}]})
    assert "rows: 2 items != 3 items" in lines
    assert 'rows: only in the second (1x): {"id": 2}' in lines


def test_ledger_names_groups_by_their_batches_not_by_the_airflow_run():
    def ledger(run_id):
        group = f"manual__{run_id}"
        return lake_state._ledger(
            [
                {"pk": f"group#{group}", "kind": "group", "group_id": group, "batches": ["b2", "b1"],
                 "state": "APPLIED", "claimed_at": run_id},
                {"pk": "batch#b1", "kind": "batch", "group_id": group, "state": "INDEXED", "claimed_at": run_id},
                {"pk": "stateful#00000001", "kind": "stateful", "seq": 1, "run_id": f"r{run_id}",
                 "groups": [group], "begun_at": run_id},
                {"pk": f"stateful_run#r{run_id}", "kind": "stateful_run", "seq": 1, "run_id": f"r{run_id}"},
            ]
        )  # fmt: skip

    assert lake_state.diff(ledger("2026-01-01"), ledger("2026-02-02")) == []
    assert ledger("x")["stateful#00000001"]["groups"] == ["group[b1,b2]"]


def test_object_kind_hides_uuids_and_keeps_folder_and_type():
    kind = lake_state.object_kind
    assert kind("metadata/00003-6f1c2d3e-aaaa-bbbb-cccc-123456789abc.metadata.json") == "metadata.json"
    assert kind("metadata/snap-123-1-6f1c2d3e-aaaa-bbbb-cccc-123456789abc.avro") == "manifest-list"
    assert (
        kind("data/region=r01/00000-0-6f1c2d3e-aaaa-bbbb-cccc-123456789abc.parquet")
        == "data/region=r01/*.parquet"
    )
    assert kind("log_date=2024-03-01/.f1-0_20240301.log.1_0-12-34") == "log_date=2024-03-01/*.log"


def test_invariants_catch_open_requests_double_pricing_and_a_batch_in_two_groups():
    state = {
        "gdpr": {
            "requests": {"cust-000004": {"status": "IN_PROGRESS"}, "cust-000017": {"status": "COMPLETED"}}
        },
        "pricing": {
            "launches": {"l1": {"total_cost": "2.0000", "instance_cost": "1.0000", "volume_cost": "0"}}
        },
        "reconciliation": {
            "ledger": {
                "group#a": {"batches": ["b1"]},
                "group#b": {"batches": ["b1", "b2"]},
                "stateful#00000002": {"seq": 2, "groups": ["group#a"]},
            },
            "index": {"k1": {"version": 2, "artifact": {"key": "k1", "version": 1}}},
        },
    }
    problems = lake_state.invariants(state)
    assert any("cust-000004 is left IN_PROGRESS" in p for p in problems)
    assert not any("cust-000017" in p for p in problems)
    assert any("launch l1 total 2.0000" in p for p in problems)
    assert any("batch b1 is in group#a and group#b" in p for p in problems)
    assert any("have a hole" in p for p in problems)
    assert any("index entry k1 v2" in p for p in problems)


def test_retry_delay_scale_shortens_delays_and_keeps_the_retries(monkeypatch):
    from datetime import timedelta

    from dataplatform.task_retries import DELAY_SCALE_ENV, retry_args

    normal = retry_args(2, timedelta(minutes=5))
    monkeypatch.setenv(DELAY_SCALE_ENV, "0.01")
    fast = retry_args(2, timedelta(minutes=5))
    assert (normal["retries"], fast["retries"]) == (2, 2)
    assert (normal["retry_delay"], fast["retry_delay"]) == (timedelta(minutes=5), timedelta(seconds=3))
    monkeypatch.setenv(DELAY_SCALE_ENV, "2")
    with pytest.raises(ValueError, match=DELAY_SCALE_ENV):
        retry_args(2, timedelta(minutes=5))


def test_audit_details_compare_without_commit_ids_uuids_and_byte_counts_but_keep_real_differences():
    def details(instant, snapshot, uuid, size, versions, rows_deleted):
        return {
            "rows_deleted": rows_deleted,
            "noncurrent_versions_deleted": versions,
            "bytes_read": size,
            "job": {"checked": [instant, "latest"], "rows_found": {instant: 0, "latest": 0, snapshot: 0}},
            "unreachable_files_deleted": [f"s3://b/t/data/00000-0-{uuid}.parquet"],
        }

    first = details(
        "20261205094341104", "3389718718938444853", "8b1e7d0c-7101-43c8-856f-258ab76a9492", 10, 1071, 3
    )
    second = details(
        "20261205094819360", "864143645828920227", "e39ee861-d431-4a06-ac39-e6e031db022f", 12, 1073, 3
    )
    assert lake_state._drop_volatile_deep(first) == lake_state._drop_volatile_deep(second)
    third = details(
        "20261205094819360", "864143645828920227", "e39ee861-d431-4a06-ac39-e6e031db022f", 12, 0, 4
    )
    assert lake_state.diff(
        {"a": lake_state._drop_volatile_deep(first)}, {"a": lake_state._drop_volatile_deep(third)}
    )

"""Bin-pack compaction and the manifest rewrite with pyiceberg (``dataplatform.iceberg.compaction``,
``manifest_rewrite``) on a real table (Glue catalog and S3 on moto), checked from outside: the rows read
back by a fresh pyiceberg load, the live data files and manifests of the current snapshot, the snapshots'
operations and the objects in the bucket."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataplatform.iceberg import compaction
from dataplatform.iceberg.catalog import AwsAccess, load_glue_catalog
from dataplatform.iceberg.compaction import compact_table
from dataplatform.iceberg.compaction_plan import MIB, BinPackRules, ManifestRules
from dataplatform.iceberg.manifest_rewrite import rewrite_small_manifests
from dataplatform.iceberg.sample import ARROW_SCHEMA, EPOCH, create_sample_table

pytestmark = pytest.mark.integration

BUCKET = "lake"
IDENTIFIER = "db.events"
LOCATION = f"s3://{BUCKET}/warehouse/db/events"
RULES = BinPackRules(target_file_bytes=128 * MIB, min_input_files=5, max_bytes_per_run=1024 * MIB)
# Appends per region: r00 and r01 cross min_input_files, r02 stays under it.
APPENDS = {"r00": 8, "r01": 6, "r02": 3}


@pytest.fixture
def lake(aws):
    aws.s3.create_bucket(Bucket=BUCKET)
    aws.catalog = load_glue_catalog(AwsAccess("us-east-1", aws.url, "testing", "testing"))
    table = create_sample_table(aws.catalog, IDENTIFIER, LOCATION)
    order = 0
    for region, appends in APPENDS.items():
        for _ in range(appends):
            table.append(rows(region, range(order, order + 3)))
            order += 3
    return aws


def rows(region: str, ids) -> pa.Table:
    ids = list(ids)
    return pa.Table.from_pylist(
        [{"order_id": i, "region": region, "amount_cents": 7 * i, "updated_at": EPOCH} for i in ids],
        schema=ARROW_SCHEMA,
    )


def table_rows(catalog) -> list[dict]:
    """Every row of the current snapshot, read by a fresh load of the table."""
    return sorted(catalog.load_table(IDENTIFIER).scan().to_arrow().to_pylist(), key=lambda r: r["order_id"])


def files_per_region(catalog) -> dict[str, int]:
    """Live data files of the current snapshot per region partition (the table's files metadata)."""
    counts: dict[str, int] = {}
    for row in catalog.load_table(IDENTIFIER).inspect.data_files().to_pylist():
        region = row["partition"]["region"]
        counts[region] = counts.get(region, 0) + 1
    return counts


def objects(s3) -> set[str]:
    return {
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        for obj in page.get("Contents", [])
    }


def test_the_small_files_of_each_partition_become_one_and_the_rows_are_the_same(lake):
    before = table_rows(lake.catalog)
    assert files_per_region(lake.catalog) == APPENDS

    report = compact_table(lake.catalog.load_table(IDENTIFIER), RULES).as_dict()

    assert table_rows(lake.catalog) == before
    assert files_per_region(lake.catalog) == {"r00": 1, "r01": 1, "r02": 3}
    assert (report["files_before"], report["files_after"], report["partitions_compacted"]) == (17, 5, 2)
    assert [s["reason"] for s in report["skipped"]] == ["3 small files, fewer than min_input_files"]
    snapshots = lake.catalog.load_table(IDENTIFIER).snapshots()
    assert [s.summary.operation.value for s in snapshots[-2:]] == ["replace", "replace"]
    assert all(compaction.SUMMARY_KEY in s.summary.additional_properties for s in snapshots[-2:])


def test_a_rerun_right_after_finds_nothing_to_do(lake):
    compact_table(lake.catalog.load_table(IDENTIFIER), RULES)
    table = lake.catalog.load_table(IDENTIFIER)
    snapshot, keys = table.current_snapshot().snapshot_id, objects(lake.s3)

    report = compact_table(table, RULES).as_dict()

    assert (report["partitions_compacted"], report["planned"]) == (0, [])
    assert lake.catalog.load_table(IDENTIFIER).current_snapshot().snapshot_id == snapshot
    assert objects(lake.s3) == keys


def test_a_dry_run_plans_and_changes_nothing(lake):
    table = lake.catalog.load_table(IDENTIFIER)
    snapshot, keys = table.current_snapshot().snapshot_id, objects(lake.s3)

    report = compact_table(table, RULES, dry_run=True).as_dict()

    assert [(p["partition"], p["files"]) for p in report["planned"]] == [(["r00"], 8), (["r01"], 6)]
    assert lake.catalog.load_table(IDENTIFIER).current_snapshot().snapshot_id == snapshot
    assert objects(lake.s3) == keys


def test_an_append_committed_between_plan_and_commit_is_kept(lake, monkeypatch):
    before = table_rows(lake.catalog)
    commit = compaction._commit_replace
    appended = []

    def append_first(table, replaced, written, rules, write_id):
        if not appended:  # another writer commits to the group's partition after the plan
            lake.catalog.load_table(IDENTIFIER).append(rows("r00", [900, 901]))
            appended.append(True)
        return commit(table, replaced, written, rules, write_id)

    monkeypatch.setattr(compaction, "_commit_replace", append_first)
    report = compact_table(lake.catalog.load_table(IDENTIFIER), RULES).as_dict()

    after = table_rows(lake.catalog)
    assert [r["order_id"] for r in after] == sorted([r["order_id"] for r in before] + [900, 901])
    # r00's eight files became one; the append's file is still there beside it
    assert files_per_region(lake.catalog) == {"r00": 2, "r01": 1, "r02": 3}
    assert report["partitions_compacted"] == 2


def test_a_group_whose_files_another_writer_replaced_is_skipped_and_its_new_files_deleted(lake, monkeypatch):
    commit = compaction._commit_replace
    written_by_skipped = []

    def overwrite_first(table, replaced, written, rules, write_id):
        if not written_by_skipped:  # another writer rewrites r00 after the plan
            written_by_skipped.extend(f.file_path for f in written)
            other = lake.catalog.load_table(IDENTIFIER)
            other.overwrite(rows("r00", [500]), overwrite_filter="region == 'r00'")
        return commit(table, replaced, written, rules, write_id)

    monkeypatch.setattr(compaction, "_commit_replace", overwrite_first)
    report = compact_table(lake.catalog.load_table(IDENTIFIER), RULES).as_dict()

    skipped = [s for s in report["skipped"] if s["partition"] == ["r00"]]
    assert skipped and skipped[0]["reason"].endswith(
        "since the plan (another writer rewrote or deleted them)"
    )
    assert [r["order_id"] for r in table_rows(lake.catalog) if r["region"] == "r00"] == [500]
    assert files_per_region(lake.catalog)["r01"] == 1
    keys = objects(lake.s3)
    assert written_by_skipped and not [
        p for p in written_by_skipped if p.removeprefix(f"s3://{BUCKET}/") in keys
    ]


def data_manifests(catalog) -> list:
    table = catalog.load_table(IDENTIFIER)
    return [m for m in table.current_snapshot().manifests(table.io) if m.content.name == "DATA"]


def live_paths(catalog) -> set[str]:
    return {row["file_path"] for row in catalog.load_table(IDENTIFIER).inspect.files().to_pylist()}


def test_the_small_manifests_become_one_with_the_same_files_and_every_snapshot_still_reads(lake):
    table = lake.catalog.load_table(IDENTIFIER)
    previous = table.current_snapshot().snapshot_id
    rows_before, paths_before = table_rows(lake.catalog), live_paths(lake.catalog)
    assert len(data_manifests(lake.catalog)) == sum(APPENDS.values())  # one per append

    report = rewrite_small_manifests(table, ManifestRules(max_small_manifests=4))

    assert (report["rewritten"], report["manifests_before"], report["manifests_after"]) == (True, 17, 1)
    assert len(data_manifests(lake.catalog)) == 1
    assert live_paths(lake.catalog) == paths_before
    assert table_rows(lake.catalog) == rows_before
    table = lake.catalog.load_table(IDENTIFIER)
    assert table.current_snapshot().summary.operation.value == "replace"
    older = sorted(table.scan(snapshot_id=previous).to_arrow().to_pylist(), key=lambda r: r["order_id"])
    assert older == rows_before
    # a filtered scan still finds its rows (the entries keep their partitions)
    assert {r["region"] for r in table.scan(row_filter="region == 'r01'").to_arrow().to_pylist()} == {"r01"}


def test_no_manifest_rewrite_at_or_under_the_allowed_small_manifests(lake):
    table = lake.catalog.load_table(IDENTIFIER)
    snapshot = table.current_snapshot().snapshot_id

    report = rewrite_small_manifests(table, ManifestRules(max_small_manifests=17))

    assert (report["rewritten"], report["small_manifests"]) == (False, 17)
    assert lake.catalog.load_table(IDENTIFIER).current_snapshot().snapshot_id == snapshot


def test_compaction_with_manifest_rules_leaves_one_manifest_and_a_rerun_changes_nothing(lake):
    rows_before = table_rows(lake.catalog)
    rules = ManifestRules(max_small_manifests=2)

    report = compact_table(lake.catalog.load_table(IDENTIFIER), RULES, manifests=rules).as_dict()

    assert [m["rewritten"] for m in report["manifests"]] == [True, True]
    assert len(data_manifests(lake.catalog)) == 1
    assert files_per_region(lake.catalog) == {"r00": 1, "r01": 1, "r02": 3}
    assert table_rows(lake.catalog) == rows_before
    snapshot = lake.catalog.load_table(IDENTIFIER).current_snapshot().snapshot_id
    rerun = compact_table(lake.catalog.load_table(IDENTIFIER), RULES, manifests=rules).as_dict()
    assert (rerun["partitions_compacted"], [m["rewritten"] for m in rerun["manifests"]]) == (0, [False])
    assert lake.catalog.load_table(IDENTIFIER).current_snapshot().snapshot_id == snapshot


def test_a_dry_run_estimates_the_files_the_plan_would_leave(lake):
    report = compact_table(lake.catalog.load_table(IDENTIFIER), RULES, dry_run=True).as_dict()

    # r00's 8 and r01's 6 small files would become one each; r02's 3 stay: 5 of 17.
    assert (report["files_before"], report["files_after"], report["files_after_estimate"]) == (17, 17, 5)
    assert files_per_region(lake.catalog) == APPENDS


def test_the_rewritten_rows_follow_the_sort_order_within_each_file(lake):
    compact_table(lake.catalog.load_table(IDENTIFIER), RULES, sort_keys=[("order_id", "desc")])

    table = lake.catalog.load_table(IDENTIFIER)
    for region in ("r00", "r01"):
        [path] = [
            r["file_path"]
            for r in table.inspect.data_files().to_pylist()
            if r["partition"]["region"] == region
        ]
        ids = raw_rows(table, path)["order_id"].to_pylist()
        # the appends wrote ascending ids: descending proves the rewrite sorted them
        assert ids == sorted(ids, reverse=True) and len(ids) == 3 * APPENDS[region]


def test_a_sort_column_the_table_lacks_is_refused_before_any_change(lake):
    table = lake.catalog.load_table(IDENTIFIER)
    snapshot, keys = table.current_snapshot().snapshot_id, objects(lake.s3)

    with pytest.raises(compaction.CompactionError, match=r"sort_order names \['customer'\]"):
        compact_table(table, RULES, sort_keys=[("customer", "asc")])

    assert lake.catalog.load_table(IDENTIFIER).current_snapshot().snapshot_id == snapshot
    assert objects(lake.s3) == keys


def raw_rows(table, path: str) -> pa.Table:
    """A data file's rows as stored, without the table's delete files applied."""
    with table.io.new_input(path).open() as stream:
        return pq.read_table(stream)


@pytest.mark.spark
def test_position_deletes_written_by_spark_stay_applied_after_the_rewrite(lake, spark):
    """Merge-on-read deletes by Spark leave position delete files; the rewrite reads through them, so
    the new files do not hold the deleted rows (read raw, without any delete file). The delete files
    themselves stay in the snapshot, applying to no live file (pyiceberg writes no delete manifest):
    README, *Compaction*."""
    name = f"glue_catalog.{IDENTIFIER}"
    spark.sql(f"REFRESH TABLE {name}")
    spark.sql(f"ALTER TABLE {name} SET TBLPROPERTIES ('write.delete.mode'='merge-on-read')")
    spark.sql(f"DELETE FROM {name} WHERE order_id IN (0, 4, 45)")
    table = lake.catalog.load_table(IDENTIFIER)
    delete_files = table.inspect.delete_files().to_pylist()
    assert delete_files and {r["content"] for r in delete_files} == {1}  # position deletes
    rows_before = table_rows(lake.catalog)
    assert not {0, 4, 45} & {r["order_id"] for r in rows_before}

    report = compact_table(table, RULES).as_dict()

    # r02's 3 files are under min_input_files, but one has deletes: the partition is rewritten too
    assert files_per_region(lake.catalog) == {"r00": 1, "r01": 1, "r02": 1}
    assert report["partitions_compacted"] == 3
    assert table_rows(lake.catalog) == rows_before
    table = lake.catalog.load_table(IDENTIFIER)
    stored = [
        r for f in table.inspect.data_files().to_pylist() for r in raw_rows(table, f["file_path"]).to_pylist()
    ]
    assert sorted(r["order_id"] for r in stored) == [r["order_id"] for r in rows_before]

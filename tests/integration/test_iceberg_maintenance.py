"""Iceberg maintenance on real tables: pyiceberg writes them to the moto server (Glue catalog + S3), the
maintenance run expires, tags and deletes, and the tests read the tables and S3 back."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from dataplatform.config import IcebergTablePolicy
from dataplatform.iceberg import compaction, snapshots
from dataplatform.iceberg.catalog import AwsAccess, load_glue_catalog
from dataplatform.iceberg.files import FileIndex, reachable_files
from dataplatform.iceberg.maintenance import MaintenanceContext, MaintenanceError, RunClock, maintain_table
from dataplatform.iceberg.sample import append_rows, write_sample_table
from dataplatform.iceberg.state import load_state, state_uri_for
from dataplatform.s3.objects import list_objects, split_uri

pytestmark = pytest.mark.integration

BUCKET = "lake"
STATE_ROOT = f"s3://{BUCKET}/_state/iceberg/"
IDENTIFIER = "db.orders"
LOCATION = f"s3://{BUCKET}/warehouse/db/orders"


@pytest.fixture
def lake(aws):
    aws.s3.create_bucket(Bucket=BUCKET)
    aws.catalog = load_glue_catalog(AwsAccess("us-east-1", aws.url, "testing", "testing"))
    return aws


def policy(**overrides) -> IcebergTablePolicy:
    base = {
        "database": "db",
        "table": "orders",
        "retain_last": 2,
        "max_snapshot_age_hours": 0,
        "unreferenced": {"action": "tag"},
    }
    return IcebergTablePolicy.model_validate({**base, **overrides})


def run(
    lake, table_policy: IcebergTablePolicy, *, now: datetime | None = None, dry_run: bool = False
) -> dict:
    now = now or datetime.now(UTC)
    ctx = MaintenanceContext(lake.catalog, lake.s3, STATE_ROOT, tag_workers=8)
    return maintain_table(ctx, "orders", table_policy, RunClock(now.date(), now), dry_run=dry_run)


def rows_at(table, snapshot_id: int) -> list[dict]:
    return sorted(table.scan(snapshot_id=snapshot_id).to_arrow().to_pylist(), key=lambda r: r["order_id"])


def object_tags(s3, uri: str) -> dict[str, str]:
    bucket, key = split_uri(uri)
    return {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}


def all_tags(s3) -> dict[str, dict[str, str]]:
    return {uri: object_tags(s3, uri) for uri in list_objects(s3, LOCATION)}


def reachable(table) -> dict:
    return reachable_files(FileIndex(table.io), table.metadata, table.metadata_location)


@pytest.mark.parametrize("action", ["tag", "delete"])
def test_retained_snapshots_read_as_before_and_every_file_they_reach_exists(lake, action):
    table = write_sample_table(lake.catalog, IDENTIFIER, LOCATION, commits=5, n_regions=2)
    before = {s.snapshot_id: rows_at(table, s.snapshot_id) for s in table.snapshots()}
    files_before = reachable(table)

    report = run(lake, policy(unreferenced={"action": action}))

    table = lake.catalog.load_table(IDENTIFIER)
    retained = {s.snapshot_id for s in table.snapshots()}
    assert len(retained) == 2 and retained == set(snapshots.main_ancestry(table.metadata)[:2])
    assert retained.isdisjoint(report["expiry"]["expired_ids"])
    assert len(report["expiry"]["expired_ids"]) == len(before) - 2
    for snapshot_id in retained:
        assert rows_at(table, snapshot_id) == before[snapshot_id]
    listed = list_objects(lake.s3, LOCATION)
    files_after = reachable(table)
    assert set(files_after) <= set(listed)

    unreferenced = set(files_before) - set(files_after)
    assert report["unreferenced"]["files"] == len(unreferenced) > 0
    assert {"data", "manifest", "manifest_list"} <= set(report["unreferenced"]["by_kind"])
    if action == "delete":
        assert unreferenced.isdisjoint(listed)
        assert report["unreferenced"]["deleted"] == len(unreferenced)
    else:
        assert unreferenced <= set(listed)
        assert all(object_tags(lake.s3, uri).get("delete-tag-name") == "deleted" for uri in unreferenced)
        assert all("delete-tag-name" not in object_tags(lake.s3, uri) for uri in files_after)


def test_a_tagged_snapshot_survives_expiry_and_the_expired_ones_leave_the_metadata(lake):
    table = write_sample_table(lake.catalog, IDENTIFIER, LOCATION, commits=4, n_regions=2)
    pinned = table.snapshots()[1]
    pinned_rows = rows_at(table, pinned.snapshot_id)
    table.manage_snapshots().create_tag(pinned.snapshot_id, "audit-2024").commit()

    report = run(lake, policy(retain_last=1))

    table = lake.catalog.load_table(IDENTIFIER)
    ids = {s.snapshot_id for s in table.snapshots()}
    assert ids == {pinned.snapshot_id, table.current_snapshot().snapshot_id}
    assert table.metadata.refs["audit-2024"].snapshot_id == pinned.snapshot_id
    assert rows_at(table, pinned.snapshot_id) == pinned_rows
    assert set(report["expiry"]["expired_ids"]).isdisjoint(ids)
    assert not {entry.snapshot_id for entry in table.metadata.snapshot_log} - ids
    # Files of the tagged snapshot are still there, untagged.
    for uri in reachable_files(
        FileIndex(table.io), table.metadata, table.metadata_location, [pinned.snapshot_id]
    ):
        assert "delete-tag-name" not in object_tags(lake.s3, uri)


def test_tagging_keeps_the_objects_earlier_tags_and_created_files_get_the_created_tag(lake):
    table = write_sample_table(lake.catalog, IDENTIFIER, LOCATION, commits=3, n_regions=2)
    old_data = next(
        f
        for f in reachable_files(
            FileIndex(table.io), table.metadata, table.metadata_location, [table.snapshots()[0].snapshot_id]
        ).values()
        if f.kind == "data"
    )
    bucket, key = split_uri(old_data.path)
    lake.s3.put_object_tagging(
        Bucket=bucket, Key=key, Tagging={"TagSet": [{"Key": "owner", "Value": "finance"}]}
    )

    report = run(lake, policy())

    tags = object_tags(lake.s3, old_data.path)
    assert tags["owner"] == "finance" and tags["delete-tag-name"] == "deleted"
    # First run: every file the table still reaches is "created since the last run".
    table = lake.catalog.load_table(IDENTIFIER)
    current = reachable(table)
    assert report["created"]["first_run"] and report["created"]["files"] == len(current)
    assert all(object_tags(lake.s3, uri).get("write-tag-name") == "created" for uri in current)

    # Files of a later append are the only ones tagged by the next run.
    append_rows(table, version=7)
    table = lake.catalog.load_table(IDENTIFIER)
    new_files = set(reachable(table)) - set(current)
    second = run(lake, policy(retain_last=10))
    assert second["created"]["files"] == len(new_files) and second["created"]["tagged"] == len(new_files)


def test_dry_run_changes_nothing(lake):
    table = write_sample_table(lake.catalog, IDENTIFIER, LOCATION, commits=4, n_regions=2)
    tags_before = all_tags(lake.s3)
    rule = [{"name": "daily-{date:%Y-%m-%d}", "every": "day", "keep_days": 7}]

    report = run(lake, policy(tag_rules=rule), dry_run=True)

    assert report["expiry"]["snapshots_expired"] == len(table.snapshots()) - 2
    assert report["unreferenced"]["files"] > 0 and report["tags"]["created"] == [
        f"daily-{datetime.now(UTC):%Y-%m-%d}"
    ]
    after = lake.catalog.load_table(IDENTIFIER)
    assert after.metadata_location == table.metadata_location
    assert all_tags(lake.s3) == tags_before
    assert load_state(lake.s3, state_uri_for(STATE_ROOT, IDENTIFIER)).files is None
    assert "Rules" not in _lifecycle(lake.s3)
    assert not {"PutObjectTagging", "DeleteObjects", "PutBucketLifecycleConfiguration"} & set(
        report["s3_calls"]
    )


def test_a_rerun_changes_nothing(lake):
    write_sample_table(lake.catalog, IDENTIFIER, LOCATION, commits=4, n_regions=2)
    rule = [{"name": "daily-{date:%Y-%m-%d}", "every": "day", "keep_days": 7}]
    first = run(lake, policy(tag_rules=rule))
    table = lake.catalog.load_table(IDENTIFIER)
    tags = all_tags(lake.s3)
    lifecycle = _lifecycle(lake.s3)
    view = lake_view(lake)

    second = run(lake, policy(tag_rules=rule))

    assert first["tags"]["created"] and second["tags"] == {
        **first["tags"],
        "created": [],
        "existing": first["tags"]["created"],
        "commits": 0,
    }
    assert second["expiry"]["snapshots_expired"] == 0 and second["expiry"]["commits"] == 0
    assert lake.catalog.load_table(IDENTIFIER).metadata_location == table.metadata_location
    assert all_tags(lake.s3) == tags and _lifecycle(lake.s3) == lifecycle
    assert second["lifecycle"]["status"] == "unchanged"
    assert lake_view(lake) == view  # the state object too is not written again
    assert not {"PutObjectTagging", "DeleteObjects", "PutBucketLifecycleConfiguration"} & set(
        second["s3_calls"]
    )


def test_an_append_committed_during_maintenance_stays_readable_and_untouched(lake, monkeypatch):
    table = write_sample_table(lake.catalog, IDENTIFIER, LOCATION, commits=4, n_regions=2)
    writer = load_glue_catalog(AwsAccess("us-east-1", lake.url, "testing", "testing"))
    real_plan = snapshots.plan_expiry
    appended = {}

    def plan_then_let_another_writer_append(*args, **kwargs):
        plan = real_plan(*args, **kwargs)
        if not appended:  # the first plan only: the append lands between planning and committing
            appended["table"] = append_rows(writer.load_table(IDENTIFIER), version=9)
        return plan

    monkeypatch.setattr(snapshots, "plan_expiry", plan_then_let_another_writer_append)
    report = run(lake, policy(unreferenced={"action": "delete"}))

    assert report["expiry"]["conflicts_retried"] == 1 and report["expiry"]["commits"] == 1
    table = lake.catalog.load_table(IDENTIFIER)
    head = table.current_snapshot()
    assert head.snapshot_id == appended["table"].current_snapshot().snapshot_id
    rows = table.scan().to_arrow().to_pylist()
    assert {r["order_id"] for r in rows} >= {90_000}
    listed = list_objects(lake.s3, LOCATION)
    assert set(reachable(table)) <= set(listed)


def test_orphans_older_than_the_minimum_age_get_the_action_younger_ones_are_left(lake):
    write_sample_table(lake.catalog, IDENTIFIER, LOCATION, commits=2, n_regions=2)
    orphan = f"{LOCATION}/data/region=r00/00000-crashed-writer.parquet"
    bucket, key = split_uri(orphan)
    lake.s3.put_object(Bucket=bucket, Key=key, Body=b"not committed")

    now_report = run(lake, policy(unreferenced={"action": "delete"}))
    assert now_report["orphans"]["found"] == 0 and now_report["orphans"]["younger_than_min_age"] == 1
    assert orphan in list_objects(lake.s3, LOCATION)

    later = datetime.now(UTC) + timedelta(hours=73)
    dry = run(lake, policy(unreferenced={"action": "delete"}), now=later, dry_run=True)
    assert dry["orphans"]["found"] == 1 and dry["orphans"]["sample"] == [orphan]
    assert orphan in list_objects(lake.s3, LOCATION)

    report = run(lake, policy(unreferenced={"action": "delete"}), now=later)
    assert report["orphans"]["found"] == 1 and report["orphans"]["deleted"] == 1
    assert orphan not in list_objects(lake.s3, LOCATION)
    assert lake.catalog.load_table(IDENTIFIER).scan().to_arrow().num_rows == 4


def test_tags_past_their_age_are_removed_and_their_snapshots_expire(lake):
    table = write_sample_table(lake.catalog, IDENTIFIER, LOCATION, commits=3, n_regions=2)
    old = table.snapshots()[0]
    table.manage_snapshots().create_tag(
        old.snapshot_id, "daily-2024-03-01", max_ref_age_ms=snapshots.DAY_MS
    ).commit()

    kept = run(lake, policy())
    assert "daily-2024-03-01" in lake.catalog.load_table(IDENTIFIER).metadata.refs
    assert old.snapshot_id not in kept["expiry"]["expired_ids"]

    report = run(lake, policy(), now=datetime.now(UTC) + timedelta(days=2))
    table = lake.catalog.load_table(IDENTIFIER)
    assert report["expiry"]["tags_removed"] == ["daily-2024-03-01"]
    assert "daily-2024-03-01" not in table.metadata.refs
    assert old.snapshot_id in report["expiry"]["expired_ids"]
    assert table.metadata.snapshot_by_id(old.snapshot_id) is None


def test_metadata_files_the_expiry_drops_from_the_log_are_unreferenced(lake):
    table = write_sample_table(lake.catalog, IDENTIFIER, LOCATION, commits=3, n_regions=2)
    with table.transaction() as tx:
        tx.set_properties({"write.metadata.previous-versions-max": "2"})
    table = lake.catalog.load_table(IDENTIFIER)
    log_before = [entry.metadata_file for entry in table.metadata.metadata_log]
    assert len(log_before) == 2

    report = run(lake, policy(unreferenced={"action": "delete"}))

    assert report["unreferenced"]["by_kind"]["metadata"] == 1
    assert log_before[0] not in list_objects(lake.s3, LOCATION)
    assert lake.catalog.load_table(IDENTIFIER).scan().to_arrow().num_rows == 4


def test_the_lifecycle_rule_is_merged_with_the_buckets_other_rules(lake):
    write_sample_table(lake.catalog, IDENTIFIER, LOCATION, commits=2, n_regions=1)
    other = {"ID": "expire-tmp", "Status": "Enabled", "Filter": {"Prefix": "tmp/"}, "Expiration": {"Days": 1}}
    lake.s3.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": [other]})

    report = run(lake, policy(lifecycle={"transition_days": 30, "expiration_days": 365}))

    rules = {rule["ID"]: rule for rule in _lifecycle(lake.s3)["Rules"]}
    assert report["lifecycle"]["status"] == "created"
    assert rules["expire-tmp"]["Expiration"] == {"Days": 1}
    ours = rules["iceberg-unreferenced-db.orders"]
    assert ours["Filter"] == {
        "And": {"Prefix": "warehouse/db/orders/", "Tags": [{"Key": "delete-tag-name", "Value": "deleted"}]}
    }
    assert ours["Transitions"] == [{"Days": 30, "StorageClass": "GLACIER_IR"}] and ours["Expiration"] == {
        "Days": 365
    }

    changed = run(lake, policy(lifecycle={"transition_days": 7, "expiration_days": 90}))
    rules = {rule["ID"]: rule for rule in _lifecycle(lake.s3)["Rules"]}
    assert changed["lifecycle"]["status"] == "updated" and set(rules) == {
        "expire-tmp",
        "iceberg-unreferenced-db.orders",
    }
    assert rules["iceberg-unreferenced-db.orders"]["Expiration"] == {"Days": 90}


def test_an_unknown_table_fails_before_any_change(lake):
    with pytest.raises(MaintenanceError, match=r"db\.missing does not exist"):
        run(lake, policy(table="missing"))
    assert lake.s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def _lifecycle(s3) -> dict:
    try:
        return {"Rules": s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]}
    except s3.exceptions.ClientError:
        return {}


def test_a_run_killed_after_the_expiry_commit_is_finished_by_the_next_run(lake, monkeypatch):
    from dataplatform.s3 import objects

    write_sample_table(lake.catalog, IDENTIFIER, LOCATION, commits=4, n_regions=2)
    real_delete = objects.delete_objects

    def worker_dies(*args, **kwargs):
        raise KeyboardInterrupt("worker killed")

    monkeypatch.setattr(objects, "delete_objects", worker_dies)
    with pytest.raises(KeyboardInterrupt):
        run(lake, policy(unreferenced={"action": "delete"}))
    pending = load_state(lake.s3, state_uri_for(STATE_ROOT, IDENTIFIER)).pending
    assert pending["action"] == "delete" and pending["files"]
    assert set(pending["files"]) <= set(list_objects(lake.s3, LOCATION))  # committed, not yet deleted

    monkeypatch.setattr(objects, "delete_objects", real_delete)
    report = run(lake, policy(unreferenced={"action": "delete"}))

    assert report["resumed_pending"]["deleted"] == len(pending["files"])
    assert set(pending["files"]).isdisjoint(list_objects(lake.s3, LOCATION))
    assert load_state(lake.s3, state_uri_for(STATE_ROOT, IDENTIFIER)).pending is None
    table = lake.catalog.load_table(IDENTIFIER)
    assert set(reachable(table)) <= set(list_objects(lake.s3, LOCATION))
    assert table.scan().to_arrow().num_rows == 4


def test_a_run_killed_the_moment_its_expiry_committed_leaves_the_tagging_to_the_next_run(lake, monkeypatch):
    """Found by the crash harness (tests/crash): killed between the expiry commit and saving the list of
    files it unreferenced, the retry found nothing left to expire and never tagged those files."""
    from pyiceberg.table.update import RemoveSnapshotsUpdate

    write_sample_table(lake.catalog, IDENTIFIER, LOCATION, commits=4, n_regions=2)
    real_commit = lake.catalog.commit_table

    def commit_then_die(table, requirements, updates):
        response = real_commit(table, requirements, updates)
        if any(isinstance(update, RemoveSnapshotsUpdate) for update in updates):
            raise KeyboardInterrupt("worker killed")  # the commit took effect; nothing after it ran
        return response

    monkeypatch.setattr(lake.catalog, "commit_table", commit_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(lake, policy())
    pending = load_state(lake.s3, state_uri_for(STATE_ROOT, IDENTIFIER)).pending
    assert pending["action"] == "tag" and pending["files"]

    monkeypatch.setattr(lake.catalog, "commit_table", real_commit)
    report = run(lake, policy())

    assert report["expiry"]["snapshots_expired"] == 0  # the killed run's commit stands
    assert report["resumed_pending"]["tagged"] == len(pending["files"])
    tags = all_tags(lake.s3)
    assert all(tags[uri].get("delete-tag-name") == "deleted" for uri in pending["files"])
    assert not set(pending["files"]) & set(reachable(lake.catalog.load_table(IDENTIFIER)))


def test_files_of_an_archive_table_are_never_deleted_tagged_or_called_orphans(lake):
    from dataplatform.iceberg.archive import archive_register, release_from_lifecycle

    write_sample_table(lake.catalog, IDENTIFIER, LOCATION, commits=4, n_regions=2)
    old_metadata = lake.catalog.load_table(IDENTIFIER).metadata.metadata_log[2].metadata_file
    assert archive_register(lake.catalog, lake.s3, IDENTIFIER, old_metadata, "orders_archive")["registered"]
    archive = lake.catalog.load_table("db.orders_archive")
    archive_rows = archive.scan().to_arrow().sort_by("order_id")
    archive_files = set(reachable(archive))
    expired_before = {s.snapshot_id for s in lake.catalog.load_table(IDENTIFIER).snapshots()}

    later = datetime.now(UTC) + timedelta(days=4)  # every unreferenced object is old enough to be an orphan
    report = run(lake, policy(unreferenced={"action": "delete"}), now=later)

    table = lake.catalog.load_table(IDENTIFIER)
    only_archive = archive_files - set(reachable(table))
    assert report["archive_tables"] == ["db.orders_archive"] and only_archive
    assert report["expiry"]["snapshots_expired"] == len(expired_before) - 2
    assert report["unreferenced"]["deleted"] > 0  # files neither table reaches went
    assert set(list_objects(lake.s3, LOCATION)) == archive_files | set(reachable(table))
    assert lake.catalog.load_table("db.orders_archive").scan().to_arrow().sort_by("order_id") == archive_rows

    # With the tag action nothing of the archive gets the delete tag, and untagging leaves it alone.
    tagged = run(lake, policy(unreferenced={"action": "tag"}), now=later)
    assert tagged["orphans"]["found"] == 0 and tagged["unreferenced"]["files"] == 0
    assert all("delete-tag-name" not in object_tags(lake.s3, uri) for uri in archive_files)
    assert release_from_lifecycle(lake.catalog, lake.s3, "db.orders_archive", "delete-tag-name") == 0
    one = sorted(archive_files)[0]
    bucket, key = split_uri(one)
    both = [{"Key": "owner", "Value": "finance"}, {"Key": "delete-tag-name", "Value": "deleted"}]
    lake.s3.put_object_tagging(Bucket=bucket, Key=key, Tagging={"TagSet": both})
    assert release_from_lifecycle(lake.catalog, lake.s3, "db.orders_archive", "delete-tag-name") == 1
    assert object_tags(lake.s3, one) == {"owner": "finance"}


def nightly(night: date, *, at_hour: int = 2) -> RunClock:
    """The clock of the nightly run of ``night``: it tags the day before, ages from 02:00 that night."""
    return RunClock(
        night - timedelta(days=1), datetime(night.year, night.month, night.day, at_hour, tzinfo=UTC)
    )


def run_at(lake, table_policy: IcebergTablePolicy, clock: RunClock) -> dict:
    ctx = MaintenanceContext(lake.catalog, lake.s3, STATE_ROOT, tag_workers=8)
    return maintain_table(ctx, "orders", table_policy, clock)


def daily_tags(days) -> set[str]:
    return {f"daily-{day:%Y-%m-%d}" for day in days}


def lake_view(lake) -> tuple:
    """What a rerun must leave as it is: the catalog's metadata location and refs, every object under
    the table location (size, last modified, S3 tags), and the maintenance state object."""
    table = lake.catalog.load_table(IDENTIFIER)
    refs = {name: (ref.snapshot_id, ref.max_ref_age_ms) for name, ref in table.metadata.refs.items()}
    state = lake.s3.head_object(Bucket=BUCKET, Key=split_uri(state_uri_for(STATE_ROOT, IDENTIFIER))[1])
    return (
        table.metadata_location,
        refs,
        list_objects(lake.s3, LOCATION),
        all_tags(lake.s3),
        (state["ETag"], state["LastModified"]),
    )


def test_daily_tags_stay_keep_days_after_their_day_and_a_rerun_of_an_aged_day_writes_nothing(lake):
    write_sample_table(lake.catalog, IDENTIFIER, LOCATION, commits=2, n_regions=1)
    rule = [{"name": "daily-{date:%Y-%m-%d}", "every": "day", "keep_days": 3}]
    table_policy = policy(tag_rules=rule, retain_last=100)  # every snapshot is kept: only tags age
    # Nights (and the backfilled ones) whose days end after every snapshot the test writes.
    first = datetime.now(UTC).date() + timedelta(days=6)
    nights = [first + timedelta(days=i) for i in range(10)]

    for i, night in enumerate(nights):
        append_rows(lake.catalog.load_table(IDENTIFIER), version=10 + i)  # a snapshot for each day
        report = run_at(lake, table_policy, nightly(night))
        table = lake.catalog.load_table(IDENTIFIER)
        # keep_days 3: the tag of day D stays through D + 3, so each night after the third holds three.
        tagged_days = [
            night - timedelta(days=k)
            for k in (1, 2, 3)
            if night - timedelta(days=k) >= first - timedelta(days=1)
        ]
        assert set(table.metadata.refs) - {"main"} == daily_tags(tagged_days), night
        assert report["tags"]["created"] == [f"daily-{night - timedelta(days=1):%Y-%m-%d}"]
        assert report["tags"]["skipped"] == {}
        assert (
            table.metadata.refs[report["tags"]["created"][0]].snapshot_id
            == table.current_snapshot().snapshot_id
        )
    metadata_files = [u for u in list_objects(lake.s3, LOCATION) if "/metadata/" in u and u.endswith(".json")]
    before = lake_view(lake)

    # The rerun of the third night, and a backfill of three nights before the first, after the last night.
    later = nightly(nights[-1], at_hour=9).now
    for night in (nights[2], first - timedelta(days=3), first - timedelta(days=2), first - timedelta(days=1)):
        clock = RunClock(night - timedelta(days=1), later)
        report = run_at(lake, table_policy, clock)

        assert lake_view(lake) == before, night
        name = f"daily-{clock.day:%Y-%m-%d}"
        assert report["tags"]["created"] == [] and report["tags"]["commits"] == 0
        assert report["tags"]["skipped"] == {
            name: f"past its retention: kept through {clock.day + timedelta(days=3)} "
            f"({clock.day} + keep_days 3), the run is at {later.isoformat()}"
        }
        assert report["expiry"]["commits"] == 0 and report["expiry"]["tags_removed"] == []
        assert f"skipped ['{name}']: past their retention" in report["summary"]
    assert len(
        [u for u in list_objects(lake.s3, LOCATION) if "/metadata/" in u and u.endswith(".json")]
    ) == len(metadata_files)


# -- compaction ---------------------------------------------------------------------------------------------

COMPACTION = {
    "target_file_mb": 128,
    "min_input_files": 4,
    "max_bytes_per_run": 1024**3,
    "max_small_manifests": 2,
}


def streamed_table(lake):
    """One overwrite, then 6 small appends into one partition (r00): 7 small files there, 1 in r01."""
    table = write_sample_table(lake.catalog, IDENTIFIER, LOCATION, commits=1, n_regions=2)
    for version in range(1, 7):
        append_rows(table, version)
    return lake.catalog.load_table(IDENTIFIER)


def data_files_per_region(table) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in table.inspect.data_files().to_pylist():
        counts[row["partition"]["region"]] = counts.get(row["partition"]["region"], 0) + 1
    return counts


def test_the_run_compacts_before_expiry_and_the_replaced_small_files_are_unreferenced(lake):
    table = streamed_table(lake)
    rows = rows_at(table, table.current_snapshot().snapshot_id)
    small_files = {
        r["file_path"] for r in table.inspect.data_files().to_pylist() if r["partition"]["region"] == "r00"
    }
    assert data_files_per_region(table) == {"r00": 7, "r01": 1}

    report = run(lake, policy(compaction=COMPACTION))

    after = lake.catalog.load_table(IDENTIFIER)
    assert data_files_per_region(after) == {"r00": 1, "r01": 1}
    assert rows_at(after, after.current_snapshot().snapshot_id) == rows
    assert report["compaction"]["partitions_compacted"] == 1
    assert (report["compaction"]["files_before"], report["compaction"]["files_after"]) == (8, 2)
    # the expiry (retain_last 2, no age) dropped every snapshot that reached the small files: tagged
    tags = all_tags(lake.s3)
    assert small_files and all(tags[f]["delete-tag-name"] == "deleted" for f in small_files)
    assert not small_files & set(reachable(after))


def test_a_rerun_after_compaction_changes_nothing(lake):
    streamed_table(lake)
    run(lake, policy(compaction=COMPACTION))
    metadata, view = lake.catalog.load_table(IDENTIFIER).metadata_location, lake_view(lake)

    second = run(lake, policy(compaction=COMPACTION))

    assert second["compaction"]["planned"] == [] and second["compaction"]["manifests_rewritten"] == 0
    assert lake.catalog.load_table(IDENTIFIER).metadata_location == metadata
    assert lake_view(lake) == view


def objects_and_metadata(lake) -> tuple:
    """The table's metadata location and every object under its location, with its S3 tags (before a
    first run there is no maintenance state: ``lake_view`` needs one)."""
    return (
        lake.catalog.load_table(IDENTIFIER).metadata_location,
        list_objects(lake.s3, LOCATION),
        all_tags(lake.s3),
    )


def test_a_dry_run_reports_the_compaction_and_changes_nothing(lake):
    streamed_table(lake)
    view = objects_and_metadata(lake)

    report = run(lake, policy(compaction=COMPACTION), dry_run=True)

    assert [(p["partition"], p["files"]) for p in report["compaction"]["planned"]] == [(["r00"], 7)]
    assert report["compaction"]["files_after_estimate"] == 2
    assert "would compact 1 partitions (8 -> 2 data files)" in report["summary"]
    assert objects_and_metadata(lake) == view
    assert load_state(lake.s3, state_uri_for(STATE_ROOT, IDENTIFIER)).files is None


def test_a_sort_column_the_table_lacks_fails_the_run_before_any_change(lake):
    streamed_table(lake)
    view = objects_and_metadata(lake)
    rule = [{"name": "daily-{date:%Y-%m-%d}", "every": "day", "keep_days": 7}]

    with pytest.raises(MaintenanceError, match=r"table 'orders': .*sort_order names \['customer_id'\]"):
        run(lake, policy(tag_rules=rule, compaction={**COMPACTION, "sort_order": ["customer_id"]}))

    assert objects_and_metadata(lake) == view  # no tag either: the tag commit comes after the plan


def test_files_of_a_compaction_killed_before_its_commit_are_deleted_by_the_next_run(lake, monkeypatch):
    streamed_table(lake)

    def killed(*args):
        raise RuntimeError("the worker died before the commit")

    monkeypatch.setattr(compaction, "_commit_replace", killed)
    with pytest.raises(RuntimeError, match="died before the commit"):
        run(lake, policy(compaction=COMPACTION))
    written = set(list_objects(lake.s3, LOCATION)) - set(reachable(lake.catalog.load_table(IDENTIFIER)))
    assert written and all(uri.endswith(".parquet") for uri in written)  # r00's new file, never committed

    monkeypatch.undo()
    report = run(lake, policy(compaction=COMPACTION))

    assert report["compaction_leftovers_deleted"] == sorted(written)
    assert not written & set(list_objects(lake.s3, LOCATION))
    assert data_files_per_region(lake.catalog.load_table(IDENTIFIER)) == {"r00": 1, "r01": 1}

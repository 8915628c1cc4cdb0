"""The Spark backend of Iceberg maintenance: spec, catalog conf and the exact SQL the job runs.

No Iceberg Spark runtime can be installed here, so the SQL is checked as text, and the job runs against
``FakeIcebergSpark``: a stand-in for ``spark.sql`` that answers the job's metadata queries from a small
table model and applies the effect of CREATE TAG and expire_snapshots to it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from datetime import UTC, date, datetime

import pytest
from pyspark.sql import Row

from dataplatform import spark as spark_spec
from dataplatform.config import IcebergTablePolicy
from dataplatform.iceberg import spark_sql
from dataplatform.iceberg.maintenance import RunClock
from spark_jobs import iceberg_maintenance as job
from spark_jobs.common import iceberg_sql

pytestmark = pytest.mark.unit

T = "`glue_catalog`.`lake`.`clickstream`"
NOW = datetime(2024, 4, 1, 2, 0, 5, 123456, tzinfo=UTC)
MONTH_END = RunClock(day=date(2024, 3, 31), now=NOW)
MID_MONTH = RunClock(day=date(2024, 3, 30), now=NOW)
# now - 120 h and now - 72 h
EXPIRE_BEFORE = "TIMESTAMP '2024-03-27 02:00:05.123456'"
ORPHANS_BEFORE = "TIMESTAMP '2024-03-29 02:00:05.123456'"
END_OF_MARCH_31 = "TIMESTAMP '2024-04-01 00:00:00.000000'"
END_OF_MARCH_30 = "TIMESTAMP '2024-03-31 00:00:00.000000'"
# The end of 2024-03-31 + 7 days (the daily tag) and + 365 days (the month-end tag).
DAILY_KEPT_UNTIL = "TIMESTAMP '2024-04-08 00:00:00.000000'"
MONTH_END_KEPT_UNTIL = "TIMESTAMP '2025-04-01 00:00:00.000000'"
REPORT_URI = "s3://ops/reports/iceberg_maintenance/run/clickstream.spark_job.json"


def policy(**overrides) -> IcebergTablePolicy:
    fields = {
        "database": "lake",
        "table": "clickstream",
        "backend": "spark",
        "retain_last": 10,
        "max_snapshot_age_hours": 120,
        "tag_rules": [
            {"name": "daily-{date:%Y-%m-%d}", "every": "day", "keep_days": 7},
            {"name": "month-end-{date:%Y-%m}", "every": "month_end", "keep_days": 365},
        ],
        "unreferenced": {"action": "tag", "tag": {"key": "delete-tag-name", "value": "deleted"}},
        "created": {"enabled": True, "tag": {"key": "write-tag-name", "value": "created"}},
        "orphan_min_age_hours": 72,
    }
    return IcebergTablePolicy.model_validate({**fields, **overrides})


def spec_for(clock=MONTH_END, dry_run=False, report_uri=REPORT_URI, **overrides) -> dict:
    return spark_sql.build_spec("clickstream", policy(**overrides), clock, dry_run, report_uri, "us-east-1")


def lookup_sql(end_of_day: str, keep_until: str) -> str:
    return (
        f"SELECT s.snapshot_id, CAST(CEIL((unix_millis({keep_until}) - unix_millis(s.committed_at)) / "
        f"60000) AS BIGINT) AS retain_minutes FROM {T}.`snapshots` AS s JOIN {T}.`history` AS h "
        "ON s.snapshot_id = h.snapshot_id "
        f"WHERE h.is_current_ancestor AND s.committed_at < {end_of_day} "
        "ORDER BY s.committed_at DESC, s.snapshot_id DESC LIMIT 1"
    )


REF_NAMES = f"SELECT name, type FROM {T}.`refs`"
SNAPSHOTS = f"SELECT snapshot_id, committed_at < {EXPIRE_BEFORE} AS old_enough FROM {T}.`snapshots`"
REFS = (
    "SELECT r.name, r.type, r.snapshot_id, r.max_reference_age_in_ms, "
    f"unix_millis(s.committed_at) AS committed_ms FROM {T}.`refs` AS r "
    f"LEFT JOIN {T}.`snapshots` AS s ON r.snapshot_id = s.snapshot_id"
)
LAST_ANCESTORS = (
    f"SELECT snapshot_id, max(made_current_at) AS last_made_current_at FROM {T}.`history` "
    "WHERE is_current_ancestor GROUP BY snapshot_id ORDER BY last_made_current_at DESC LIMIT 10"
)
EXPIRE = (
    "CALL `glue_catalog`.system.expire_snapshots(table => '`lake`.`clickstream`', "
    f"older_than => {EXPIRE_BEFORE}, retain_last => 10, stream_results => true)"
)


def orphans_sql(dry_run: bool) -> str:
    return (
        "CALL `glue_catalog`.system.remove_orphan_files(table => '`lake`.`clickstream`', "
        f"older_than => {ORPHANS_BEFORE}, dry_run => {str(dry_run).lower()}, prefix_listing => true)"
    )


# -- the spec -----------------------------------------------------------------------------------------------


def test_the_spec_carries_the_tags_due_and_the_cutoffs():
    spec = spec_for()
    assert spec["tags"] == [
        {
            "name": "daily-2024-03-31",
            "rule": "daily-{date:%Y-%m-%d}",
            "keep_days": 7,
            "as_of_before": "2024-04-01T00:00:00+00:00",
            "keep_until": "2024-04-08T00:00:00+00:00",
        },
        {
            "name": "month-end-2024-03",
            "rule": "month-end-{date:%Y-%m}",
            "keep_days": 365,
            "as_of_before": "2024-04-01T00:00:00+00:00",
            "keep_until": "2025-04-01T00:00:00+00:00",
        },
    ]
    assert spec["tags_skipped"] == {}
    assert spec["expire"] == {"older_than": "2024-03-27T02:00:05.123456+00:00", "retain_last": 10}
    assert spec["orphans"] == {"older_than": "2024-03-29T02:00:05.123456+00:00", "min_age_hours": 72.0}
    assert (spec["catalog"], spec["database"], spec["table"], spec["dry_run"]) == (
        "glue_catalog",
        "lake",
        "clickstream",
        False,
    )
    assert spec["unreferenced_action"] == "tag" and spec["report_uri"] == REPORT_URI
    json.dumps(spec)  # it travels as JSON


def test_the_month_end_tag_is_due_on_the_last_day_of_the_month_only():
    assert [tag["name"] for tag in spec_for(MID_MONTH)["tags"]] == ["daily-2024-03-30"]
    leap = RunClock(day=date(2024, 2, 29), now=datetime(2024, 3, 1, 2, tzinfo=UTC))
    assert [tag["name"] for tag in spec_for(leap)["tags"]] == ["daily-2024-02-29", "month-end-2024-02"]
    assert spec_for(MONTH_END, tag_rules=[])["tags"] == []


def test_the_spec_refuses_what_the_spark_procedures_cannot_do():
    with pytest.raises(ValueError, match="orphan_min_age_hours must be >= 24"):
        spec_for(orphan_min_age_hours=12)
    with pytest.raises(ValueError, match="backend 'pyiceberg', not spark"):
        spec_for(backend="pyiceberg")


# -- exact SQL ----------------------------------------------------------------------------------------------


def test_tag_sql_looks_up_mains_snapshot_at_the_end_of_the_day_and_creates_the_tag_once():
    spec = spec_for()
    assert iceberg_sql.ref_names_sql(spec) == REF_NAMES
    month_end = spec["tags"][1]
    assert iceberg_sql.snapshot_as_of_sql(spec, month_end["as_of_before"], month_end["keep_until"]) == (
        lookup_sql(END_OF_MARCH_31, MONTH_END_KEPT_UNTIL)
    )
    assert iceberg_sql.create_tag_sql(spec, "month-end-2024-03", 8123456789012345678, 525600) == (
        f"ALTER TABLE {T} CREATE TAG IF NOT EXISTS `month-end-2024-03` "
        "AS OF VERSION 8123456789012345678 RETAIN 525600 MINUTES"
    )


def test_expiry_and_orphan_sql():
    spec = spec_for()
    assert iceberg_sql.expire_snapshots_sql(spec) == EXPIRE
    assert iceberg_sql.remove_orphan_files_sql(spec) == orphans_sql(dry_run=False)
    assert iceberg_sql.remove_orphan_files_sql(spec_for(dry_run=True)) == orphans_sql(dry_run=True)
    assert iceberg_sql.snapshots_sql(spec) == SNAPSHOTS
    assert iceberg_sql.refs_sql(spec) == REFS
    assert iceberg_sql.last_ancestors_sql(spec) == LAST_ANCESTORS
    retain_3 = spec_for(retain_last=3, max_snapshot_age_hours=0)
    assert "older_than => TIMESTAMP '2024-04-01 02:00:05.123456', retain_last => 3," in (
        iceberg_sql.expire_snapshots_sql(retain_3)
    )


def test_timestamps_are_utc_literals():
    from datetime import timedelta, timezone

    paris = datetime(2024, 4, 1, 4, 0, tzinfo=timezone(timedelta(hours=2)))
    assert iceberg_sql.timestamp_literal(paris) == "TIMESTAMP '2024-04-01 02:00:00.000000'"
    assert (
        iceberg_sql.timestamp_literal("2024-04-01T02:00:00.5+00:00")
        == "TIMESTAMP '2024-04-01 02:00:00.500000'"
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        iceberg_sql.timestamp_literal(datetime(2024, 4, 1))


@pytest.mark.parametrize(
    "field, value",
    [
        ("database", "Lake"),
        ("database", "lake`; DROP TABLE x; --"),
        ("table", "click stream"),
        ("table", "clickstream'"),
        ("catalog", "glue-catalog"),
        ("database", ""),
        ("table", None),
    ],
)
def test_bad_identifiers_are_rejected_before_any_sql(field, value):
    spec = {**spec_for(), field: value}
    with pytest.raises(ValueError, match="is not a lower-case identifier"):
        iceberg_sql.check_spec(spec)
    with pytest.raises(ValueError, match="is not a lower-case identifier"):
        iceberg_sql.expire_snapshots_sql(spec)


@pytest.mark.parametrize("name", ["bad tag", "tag`", "-starts-with-dash", "x" * 129, ""])
def test_bad_tag_names_are_rejected(name):
    with pytest.raises(ValueError, match="tag name"):
        iceberg_sql.create_tag_sql(spec_for(), name, 1, 7)
    spec = spec_for()
    spec["tags"][0]["name"] = name
    with pytest.raises(ValueError, match="tag name"):
        iceberg_sql.check_spec(spec)


def test_the_spec_is_checked_field_by_field():
    spec = spec_for()
    with pytest.raises(ValueError, match=r"lacks \['report_uri'\]"):
        iceberg_sql.check_spec({k: v for k, v in spec.items() if k != "report_uri"})
    with pytest.raises(ValueError, match="retain_last must be an integer >= 1"):
        iceberg_sql.check_spec({**spec, "expire": {**spec["expire"], "retain_last": "10; DROP"}})
    with pytest.raises(ValueError, match="dry_run must be true or false"):
        iceberg_sql.check_spec({**spec, "dry_run": "false"})
    with pytest.raises(ValueError, match="version"):
        iceberg_sql.check_spec({**spec, "version": 1})
    with pytest.raises(ValueError, match="tags_skipped must be an object"):
        iceberg_sql.check_spec({**spec, "tags_skipped": ["daily-2024-03-31"]})


# -- the catalog conf ---------------------------------------------------------------------------------------

BASE_CONF = {
    "spark.sql.extensions": "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
    "spark.sql.catalog.glue_catalog": "org.apache.iceberg.spark.SparkCatalog",
    "spark.sql.catalog.glue_catalog.catalog-impl": "org.apache.iceberg.aws.glue.GlueCatalog",
    "spark.sql.catalog.glue_catalog.io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
    "spark.sql.catalog.glue_catalog.cache-enabled": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.jars": "/usr/share/aws/iceberg/lib/iceberg-spark3-runtime.jar",
}


def test_conf_with_tag_action_and_created_tags():
    assert spark_sql.spark_conf(policy()) == {
        **BASE_CONF,
        "spark.sql.catalog.glue_catalog.s3.delete-enabled": "false",
        "spark.sql.catalog.glue_catalog.s3.delete.tags.delete-tag-name": "deleted",
        "spark.sql.catalog.glue_catalog.s3.write.tags.write-tag-name": "created",
    }


def test_conf_with_delete_action_and_no_created_tags_deletes_normally():
    conf = spark_sql.spark_conf(policy(unreferenced={"action": "delete"}, created={"enabled": False}))
    assert conf == BASE_CONF
    assert not any(".s3." in key for key in conf)


def test_conf_with_delete_action_still_tags_created_files():
    conf = spark_sql.spark_conf(policy(unreferenced={"action": "delete"}))
    assert conf == {**BASE_CONF, "spark.sql.catalog.glue_catalog.s3.write.tags.write-tag-name": "created"}


@pytest.mark.parametrize(
    "tag, message",
    [
        ({"key": "delete tag", "value": "deleted"}, "tag delete tag=deleted: no spaces or '='"),
        ({"key": "a=b", "value": "deleted"}, "tag a=b=deleted: no spaces or '='"),
        ({"key": "state", "value": "to be deleted"}, "tag state=to be deleted: no spaces or '='"),
    ],
)
def test_s3_tags_that_a_spark_conf_cannot_carry_are_rejected(tag, message):
    # The policy refuses them when the config loads, before any conf is built.
    with pytest.raises(ValueError, match=message):
        spark_sql.spark_conf(policy(unreferenced={"action": "tag", "tag": tag}))


def test_the_conf_is_a_valid_spark_job_conf():
    conf = spark_sql.spark_conf(policy())
    job_spec = spark_spec.SparkJob(name="iceberg_clickstream", entry=spark_sql.JOB_ENTRY, conf=conf)
    assert job_spec.entry_path == "spark_jobs/iceberg_maintenance.py"


# -- the job against a stand-in for spark.sql ---------------------------------------------------------------

DAY_MS = 24 * 3600 * 1000
NOW_MS = int(NOW.timestamp() * 1000)


def committed(snapshot_id: int) -> int:
    return NOW_MS - (9 - snapshot_id) * DAY_MS


class FakeFrame:
    def __init__(self, rows):
        self._rows = [Row(**row) for row in rows]

    def collect(self):
        return self._rows


class FakeIcebergSpark:
    """Answers the job's statements from a table model: snapshots 1..8 (1-6 older than the expiry
    cutoff), main at 8 with ancestry 1..8, an old tag ``kept`` on 2 that has not aged and a tag ``aged``
    on 3 past its retention; expire_snapshots removes what Iceberg would."""

    def __init__(self, dry_run_expected: bool):
        self.conf = {key: value for key, value in BASE_CONF.items()}
        self.statements: list[str] = []
        self.snapshots = {n: n <= 6 for n in range(1, 9)}
        self.refs = [
            {"name": "main", "type": "BRANCH", "snapshot_id": 8, "max_reference_age_in_ms": None},
            {"name": "kept", "type": "TAG", "snapshot_id": 2, "max_reference_age_in_ms": 3650 * DAY_MS},
            {"name": "aged", "type": "TAG", "snapshot_id": 3, "max_reference_age_in_ms": 1},
        ]
        self.dry_run_expected = dry_run_expected

    def sql(self, statement: str) -> FakeFrame:
        self.statements.append(statement)
        if statement == REF_NAMES:
            return FakeFrame([{"name": ref["name"], "type": ref["type"]} for ref in self.refs])
        if statement.startswith("SELECT s.snapshot_id, "):
            # Snapshot 7, committed two days before NOW; the minutes to the TIMESTAMP the job asks about.
            keep_until = statement.split("TIMESTAMP '")[1].split("'")[0] + "+00:00"
            keep_until_ms = int(datetime.fromisoformat(keep_until).timestamp() * 1000)
            return FakeFrame(
                [{"snapshot_id": 7, "retain_minutes": -((committed(7) - keep_until_ms) // 60000)}]
            )
        if statement.startswith("ALTER TABLE"):
            assert not self.dry_run_expected
            name = statement.split("`")[-2]
            self.refs.append({"name": name, "type": "TAG", "snapshot_id": 7, "max_reference_age_in_ms": 1})
            return FakeFrame([])
        if statement == SNAPSHOTS:
            return FakeFrame([{"snapshot_id": n, "old_enough": old} for n, old in self.snapshots.items()])
        if statement == REFS:
            return FakeFrame([{**ref, "committed_ms": committed(ref["snapshot_id"])} for ref in self.refs])
        if statement.startswith("SELECT snapshot_id, max(made_current_at)"):
            return FakeFrame([{"snapshot_id": n, "last_made_current_at": None} for n in (8, 7, 6)])
        if "expire_snapshots" in statement:
            assert not self.dry_run_expected
            for snapshot_id in (1, 3, 4):
                del self.snapshots[snapshot_id]
            self.refs = [ref for ref in self.refs if ref["name"] != "aged"]
            return FakeFrame(
                [
                    {
                        "deleted_data_files_count": 12,
                        "deleted_position_delete_files_count": 0,
                        "deleted_equality_delete_files_count": 0,
                        "deleted_manifest_files_count": 3,
                        "deleted_manifest_lists_count": 3,
                        "deleted_statistics_files_count": 0,
                    }
                ]
            )
        if "remove_orphan_files" in statement:
            return FakeFrame(
                [
                    {"orphan_file_location": f"s3://lake/clickstream/data/orphan-{n}.parquet"}
                    for n in range(12)
                ]
            )
        raise AssertionError(f"unexpected statement {statement}")


def run_job(tmp_path, dry_run: bool, clock=MONTH_END):
    report_path = tmp_path / "report.json"
    spec = spec_for(clock, dry_run=dry_run, report_uri=report_path.as_uri())
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    fake = FakeIcebergSpark(dry_run_expected=dry_run)
    assert job.main(["--spec", spec_path.as_uri()], spark=fake) == 0
    return fake, json.loads(report_path.read_text())


def test_the_job_tags_expires_and_removes_orphans_and_reports_the_counts(tmp_path):
    fake, report = run_job(tmp_path, dry_run=False)
    assert fake.statements == [
        REF_NAMES,
        lookup_sql(END_OF_MARCH_31, DAILY_KEPT_UNTIL),
        # From snapshot 7 (2024-03-30 02:00:05.123) to the end of 04-07 and of 2025-03-31, in whole minutes
        # rounded up (kept through the whole last day).
        f"ALTER TABLE {T} CREATE TAG IF NOT EXISTS `daily-2024-03-31` AS OF VERSION 7 RETAIN 12840 MINUTES",
        lookup_sql(END_OF_MARCH_31, MONTH_END_KEPT_UNTIL),
        f"ALTER TABLE {T} CREATE TAG IF NOT EXISTS `month-end-2024-03` AS OF VERSION 7 RETAIN 528360 MINUTES",
        SNAPSHOTS,
        REF_NAMES,
        EXPIRE,
        SNAPSHOTS,
        REF_NAMES,
        orphans_sql(dry_run=False),
    ]
    assert report["statements"] == fake.statements
    assert report["tags"] == {
        "created": ["daily-2024-03-31", "month-end-2024-03"],
        "existing": [],
        "no_snapshot_yet": [],
        "skipped": {},
        "snapshot_ids": {"daily-2024-03-31": 7, "month-end-2024-03": 7},
    }
    assert report["expiry"] == {
        "snapshots_before": 8,
        "snapshots_expired": 3,
        "expired_ids": [1, 3, 4],
        "tags_removed": ["aged"],
        "snapshots_after": 5,
    }
    assert report["unreferenced"] == {
        "action": "tag",
        "files": 18,
        "by_kind": {
            "data_files": 12,
            "position_delete_files": 0,
            "equality_delete_files": 0,
            "manifest_files": 3,
            "manifest_lists": 3,
            "statistics_files": 0,
        },
    }
    assert report["orphans"]["found"] == 12 and report["orphans"]["action"] == "tag"
    assert (
        report["orphans"]["sample"]
        == sorted(f"s3://lake/clickstream/data/orphan-{n}.parquet" for n in range(12))[:10]
    )
    assert (report["identifier"], report["dry_run"], report["day"]) == (
        "lake.clickstream",
        False,
        "2024-03-31",
    )


def test_a_rerun_leaves_existing_tags_alone(tmp_path):
    fake = FakeIcebergSpark(dry_run_expected=False)
    fake.refs.append(
        {"name": "daily-2024-03-30", "type": "TAG", "snapshot_id": 6, "max_reference_age_in_ms": 1}
    )
    spec = spec_for(MID_MONTH, report_uri=(tmp_path / "r.json").as_uri())
    report = job.run(fake, spec, job.Storage())
    assert report["tags"]["existing"] == ["daily-2024-03-30"] and report["tags"]["created"] == []
    assert not any(s.startswith("ALTER TABLE") for s in fake.statements)
    assert not any(s.startswith("SELECT s.snapshot_id, ") for s in fake.statements)


def test_a_dry_run_creates_no_tag_and_calls_no_expiry(tmp_path):
    fake, report = run_job(tmp_path, dry_run=True)
    assert fake.statements == [
        REF_NAMES,
        lookup_sql(END_OF_MARCH_31, DAILY_KEPT_UNTIL),
        lookup_sql(END_OF_MARCH_31, MONTH_END_KEPT_UNTIL),
        SNAPSHOTS,
        REFS,
        LAST_ANCESTORS,
        orphans_sql(dry_run=True),
    ]
    assert not any("expire_snapshots" in s or s.startswith("ALTER") for s in fake.statements)
    assert report["tags"]["created"] == ["daily-2024-03-31", "month-end-2024-03"]
    # 1-6 are older than the cutoff; 2 is held by the tag "kept", 6 is among main's last 3 (8, 7, 6), 7
    # would be held by the tags this run would create; "aged" is past its retention, so 3 goes too.
    assert report["expiry"] == {
        "snapshots_before": 8,
        "snapshots_expired": 4,
        "expired_ids": [1, 3, 4, 5],
        "tags_removed": ["aged"],
        "estimate": True,
    }
    assert report["unreferenced"] == {"action": "tag", "files": None}
    assert report["orphans"]["action"] == "listed" and report["orphans"]["found"] == 12


def test_the_job_refuses_a_session_without_the_iceberg_catalog(tmp_path):
    fake = FakeIcebergSpark(dry_run_expected=True)
    del fake.conf["spark.sql.extensions"]
    with pytest.raises(RuntimeError, match=r"lacks the Iceberg catalog conf \['spark.sql.extensions'\]"):
        job.run(fake, spec_for(report_uri=(tmp_path / "r.json").as_uri()), job.Storage())
    assert fake.statements == []


def test_the_job_imports_neither_airflow_nor_dataplatform():
    code = (
        "import sys, spark_jobs.iceberg_maintenance; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('airflow', 'dataplatform', 'pyspark')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=spark_spec.REPO_ROOT, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_job_and_its_sql_are_in_the_py_files_zip(tmp_path):
    out = spark_spec.build_py_files_zip(tmp_path / "spark_jobs.zip")
    with zipfile.ZipFile(out) as archive:
        names = set(archive.namelist())
    assert {"spark_jobs/iceberg_maintenance.py", "spark_jobs/common/iceberg_sql.py"} <= names


def test_a_backfill_of_a_day_past_its_tags_retention_creates_no_tag_and_says_why(tmp_path):
    # The run of 2024-03-31 made on 2024-04-09: the daily tag (kept through 04-07) is past its retention,
    # the month-end tag (kept a year) is not.
    late = RunClock(day=date(2024, 3, 31), now=datetime(2024, 4, 9, 2, tzinfo=UTC))
    spec = spec_for(late, report_uri=(tmp_path / "r.json").as_uri())
    assert [tag["name"] for tag in spec["tags"]] == ["month-end-2024-03"]
    reason = (
        "past its retention: kept through 2024-04-07 (2024-03-31 + keep_days 7), "
        "the run is at 2024-04-09T02:00:00+00:00"
    )
    assert spec["tags_skipped"] == {"daily-2024-03-31": reason}
    fake = FakeIcebergSpark(dry_run_expected=False)
    tags = job.create_tags(job.Statements(fake), spec)  # the fake's expiry answers NOW's cutoff only
    assert tags["skipped"] == {"daily-2024-03-31": reason}
    assert tags["created"] == ["month-end-2024-03"]
    assert [s for s in fake.statements if s.startswith("ALTER TABLE")] == [
        f"ALTER TABLE {T} CREATE TAG IF NOT EXISTS `month-end-2024-03` AS OF VERSION 7 RETAIN 528360 MINUTES"
    ]

"""Tag and expiry planning (pure functions of the table metadata) and the policy's validation."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
import yaml
from pyiceberg.table.metadata import TableMetadataV2

from dataplatform.config import CONFIG_DIR, ConfigError, IcebergTablePolicy, TagRule, load_settings
from dataplatform.iceberg.snapshots import DAY_MS, aged_refs, main_ancestry, plan_expiry, plan_tags, to_ms

pytestmark = pytest.mark.unit

T0 = to_ms(datetime(2024, 3, 1, tzinfo=UTC))
HOUR = 3600 * 1000


def metadata(n: int, refs: dict[str, tuple[int, str, int | None]] | None = None) -> TableMetadataV2:
    """Snapshots 1..n on main, one an hour from T0; ``refs``: name -> (snapshot id, type, max age ms)."""
    snapshots = [
        {
            "snapshot-id": i,
            "parent-snapshot-id": i - 1 if i > 1 else None,
            "sequence-number": i,
            "timestamp-ms": T0 + (i - 1) * HOUR,
            "manifest-list": f"s3://b/t/metadata/snap-{i}.avro",
            "summary": {"operation": "append"},
        }
        for i in range(1, n + 1)
    ]
    all_refs = {"main": {"snapshot-id": n, "type": "branch"}}
    for name, (snapshot_id, kind, max_age) in (refs or {}).items():
        all_refs[name] = {"snapshot-id": snapshot_id, "type": kind, "max-ref-age-ms": max_age}
    return TableMetadataV2.model_validate(
        {
            "location": "s3://b/t",
            "table-uuid": "9c12d441-03fe-4693-9a96-a0705ddf69c1",
            "last-updated-ms": T0,
            "last-column-id": 1,
            "schemas": [
                {
                    "type": "struct",
                    "schema-id": 0,
                    "fields": [{"id": 1, "name": "x", "required": False, "type": "long"}],
                }
            ],
            "current-schema-id": 0,
            "partition-specs": [{"spec-id": 0, "fields": []}],
            "default-spec-id": 0,
            "last-partition-id": 999,
            "sort-orders": [{"order-id": 0, "fields": []}],
            "default-sort-order-id": 0,
            "snapshots": snapshots,
            "current-snapshot-id": n,
            "last-sequence-number": n,
            "refs": all_refs,
        }
    )


def test_expiry_keeps_refs_the_last_n_of_main_and_young_snapshots():
    meta = metadata(10, {"audit": (2, "tag", None), "dev": (4, "branch", None)})
    plan = plan_expiry(meta, retain_last=3, max_age_ms=2 * HOUR, now_ms=T0 + 10 * HOUR)
    # 8, 9, 10: retain_last; 9, 10 also younger than 2 h; 2 and 4: ref heads.
    assert plan.expire_ids == [1, 3, 5, 6, 7]
    assert plan.reasons[2] == "ref:audit" and plan.reasons[4] == "ref:dev"
    assert plan.reasons[8] == "retain_last" and sorted(plan.retained_ids) == [2, 4, 8, 9, 10]
    assert plan.remove_refs == []


def test_the_age_limit_keeps_snapshots_beyond_retain_last_that_are_young():
    plan = plan_expiry(metadata(6), retain_last=1, max_age_ms=3 * HOUR, now_ms=T0 + 6 * HOUR)
    assert plan.expire_ids == [1, 2, 3] and plan.reasons[4] == "too_young"


def test_aged_tags_are_removed_and_stop_protecting_their_snapshot():
    meta = metadata(5, {"daily-2024-03-01": (1, "tag", DAY_MS), "forever": (2, "tag", None)})
    young = plan_expiry(meta, retain_last=1, max_age_ms=0, now_ms=T0 + 5 * HOUR)
    assert young.remove_refs == [] and 1 not in young.expire_ids
    old = plan_expiry(meta, retain_last=1, max_age_ms=0, now_ms=T0 + 2 * DAY_MS)
    assert old.remove_refs == ["daily-2024-03-01"] and 1 in old.expire_ids and 2 not in old.expire_ids


def test_retain_last_below_one_is_refused():
    with pytest.raises(ValueError, match="retain_last"):
        plan_expiry(metadata(2), retain_last=0, max_age_ms=0, now_ms=T0)


def test_main_ancestry_follows_parents_from_the_head():
    assert main_ancestry(metadata(4)) == [4, 3, 2, 1]


RULES = [
    TagRule(name="daily-{date:%Y-%m-%d}", every="day", keep_days=7),
    TagRule(name="month-end-{date:%Y-%m}", every="month_end", keep_days=365),
]


NIGHT = to_ms(datetime(2024, 3, 2, 2, tzinfo=UTC))  # the nightly run after 2024-03-01


def test_tags_point_at_mains_snapshot_as_of_the_end_of_the_day_and_last_through_day_plus_keep_days():
    meta = metadata(30)  # hourly from 2024-03-01 00:00 to 03-02 05:00
    plan = plan_tags(meta, RULES, date(2024, 3, 1), NIGHT)
    # Snapshot 24 is 2024-03-01 23:00; kept through 03-08 means until 03-09 00:00 (aged from the first
    # millisecond after): 7 days and 1 hour.
    assert [(t.name, t.snapshot_id, t.max_ref_age_ms, t.kept_through) for t in plan.create] == [
        ("daily-2024-03-01", 24, 7 * DAY_MS + HOUR - 1, date(2024, 3, 8))
    ]
    assert plan.past_retention == {}


def test_keep_days_counts_from_the_day_the_tag_names_not_from_its_snapshot():
    # The table did not change for weeks: the tag of 2024-03-20 points at a snapshot of 2024-03-01 and is
    # still kept through 2024-03-27.
    meta = metadata(3)
    rule = [TagRule(name="daily-{date:%Y-%m-%d}", every="day", keep_days=7)]
    night = to_ms(datetime(2024, 3, 21, 2, tzinfo=UTC))
    (tag,) = plan_tags(meta, rule, date(2024, 3, 20), night).create
    tagged = {"daily-2024-03-20": (tag.snapshot_id, "tag", tag.max_ref_age_ms)}
    last_kept = to_ms(datetime(2024, 3, 28, tzinfo=UTC)) - 1
    assert aged_refs(metadata(3, tagged), last_kept) == []
    assert aged_refs(metadata(3, tagged), last_kept + 1) == ["daily-2024-03-20"]


def test_a_tag_already_past_its_retention_is_not_created_and_the_plan_says_why():
    meta = metadata(30)
    rule = [TagRule(name="daily-{date:%Y-%m-%d}", every="day", keep_days=3)]
    last_kept = to_ms(datetime(2024, 3, 5, tzinfo=UTC)) - 1  # 2024-03-01 + 3 days, end of the day
    assert [t.name for t in plan_tags(meta, rule, date(2024, 3, 1), last_kept).create] == ["daily-2024-03-01"]

    plan = plan_tags(meta, rule, date(2024, 3, 1), last_kept + 1)
    assert plan.create == []
    assert plan.past_retention == {
        "daily-2024-03-01": "past its retention: kept through 2024-03-04 (2024-03-01 + keep_days 3), "
        "the run is at 2024-03-05T00:00:00+00:00"
    }


def test_month_end_tags_only_on_the_last_day_and_existing_tags_are_left():
    meta = metadata(3, {"daily-2024-03-31": (1, "tag", 7 * DAY_MS)})
    plan = plan_tags(meta, RULES, date(2024, 3, 31), to_ms(datetime(2024, 4, 1, 2, tzinfo=UTC)))
    assert plan.existing == ["daily-2024-03-31"]
    assert [t.name for t in plan.create] == ["month-end-2024-03"]
    assert plan_tags(meta, RULES, date(2024, 2, 28), NIGHT).no_snapshot == ["daily-2024-02-28"]
    assert plan_tags(metadata(1), RULES, date(2024, 2, 29), NIGHT).no_snapshot == [
        "daily-2024-02-29",
        "month-end-2024-02",
    ]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"name": "daily", "every": "day", "keep_days": 7}, "exactly one {date}"),
        ({"name": "daily {date:%Y-%m-%d}", "every": "day", "keep_days": 7}, "renders to 'daily 2024-12-31'"),
        ({"name": "-{date:%Y}", "every": "day", "keep_days": 7}, "starting with a letter or digit"),
        ({"name": "d-{day}", "every": "day", "keep_days": 7}, "exactly one {date}"),
        ({"name": "d-{date}", "every": "hourly", "keep_days": 7}, "every"),
    ],
)
def test_a_tag_rule_with_an_invalid_name_is_refused_when_the_config_loads(tmp_path, rule, message):
    _check_bad_table(tmp_path, {"tag_rules": [rule]}, message)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"retain_last": 0}, "retain_last"),
        ({"unreferenced": {"action": "archive"}}, "unreferenced.action"),
        ({"lifecycle": {"transition_days": 30, "expiration_days": 30}}, "expiration_days must be greater"),
        ({"table": "Orders"}, "lower-case Glue identifier"),
    ],
)
def test_a_bad_table_policy_is_refused_when_the_config_loads(tmp_path, change, message):
    _check_bad_table(tmp_path, change, message)


def _check_bad_table(tmp_path, change: dict, message: str) -> None:
    raw = yaml.safe_load((CONFIG_DIR / "local.yaml").read_text())
    raw["iceberg"]["tables"]["orders"].update(change)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "iceberg.tables.orders" in str(info.value)
    assert message in str(info.value)


def test_the_policy_names_its_table():
    assert IcebergTablePolicy(database="lake", table="orders").identifier == "lake.orders"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"backend": "spark", "orphan_min_age_hours": 12}, "orphan_min_age_hours must be >= 24"),
        (
            {"backend": "spark", "unreferenced": {"action": "tag", "tag": {"key": "a b", "value": "x"}}},
            "no spaces",
        ),
    ],
)
def test_the_spark_backend_refuses_what_its_procedures_cannot_carry(tmp_path, change, message):
    _check_bad_table(tmp_path, change, message)


def test_a_table_key_that_cannot_name_a_task_is_refused(tmp_path):
    raw = yaml.safe_load((CONFIG_DIR / "local.yaml").read_text())
    raw["iceberg"]["tables"]["Big Orders"] = raw["iceberg"]["tables"].pop("orders")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="table keys must be lower-case identifiers"):
        load_settings(path)

"""Config keys, one bad value at a time: ``include/config/local.yaml`` with one key changed is loaded
with ``load_settings`` (what every task's ``settings()`` runs); it must fail with a ConfigError naming
the key (its dotted path), and loading changes nothing in the lake."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.bad_input.lake import INJECTION_LIKE, refuse

pytestmark = [pytest.mark.integration]

LOCAL = Path(__file__).resolve().parents[2] / "include" / "config" / "local.yaml"
# Parsed once for the ~350 cases (each takes a deep copy): parsing it per case cost ~30 ms each.
LOCAL_CONFIG = yaml.safe_load(LOCAL.read_text())
_DROP = object()

URI_VALUES = {
    "no_scheme": "dataplatform-local-lake/x/",
    "http": "http://example.com/x/",
    "empty": "",
    "int": 5,
    "traversal": "s3://dataplatform-local-lake/../other/",
    "newline": "s3://dataplatform-local-lake/x\n/",
    "nul": "s3://dataplatform-local-lake/x\x00/",
    "bad_bucket": "s3://Not_A_Bucket!/x/",
    "shell": "s3://dataplatform-local-lake/$(id)/",
}
INT_VALUES = {"string": "5", "float": 2.5, "bool": True, "null": None, "list": [1]}
NAME_VALUES = {
    "empty": "",
    "int": 5,
    **{
        k: INJECTION_LIKE[k]
        for k in ("sql_quote", "path_traversal", "shell_metachars", "newline", "nul", "huge")
    },
}

# dotted key -> {case: bad value}
CASES: dict[str, dict[str, Any]] = {
    "env": {"empty": "", "int": 1, "traversal": "../prod", "newline": "local\nx"},
    "aws.region": {
        "empty": "",
        "upper": "US-EAST-1",
        "int": 1,
        "traversal": "../us-east-1",
        "shell": "us-east-1;id",
        "nul": "us-east-1\x00",
    },
    "aws.conn_id": {"empty": "", "space": "aws default", "newline": "aws\ndefault", "int": 1},
    "reports_uri": URI_VALUES,
    "alerts.sns_topic_arn": {
        "null": None,
        "int": 1,
        "not_arn": "dataplatform-alerts",
        "sqs_arn": "arn:aws:sqs:us-east-1:123456789012:dataplatform-alerts",
        "fifo": "arn:aws:sns:us-east-1:123456789012:dataplatform-alerts.fifo",
        "other_region": "arn:aws:sns:eu-west-1:123456789012:dataplatform-alerts",
        "short_account": "arn:aws:sns:us-east-1:1234:dataplatform-alerts",
        "newline": "arn:aws:sns:us-east-1:123456789012:dataplatform-alerts\n",
        "shell": "arn:aws:sns:us-east-1:123456789012:alerts;id",
    },
    "alerts.publish_attempts": {"zero": 0, "eleven": 11, **INT_VALUES},
    "spark.backend": {"unknown": "yarn", "empty": "", "int": 1},
    "spark.local.master": {"empty": "", "int": 2, "shell": "local[2]; id", "newline": "local[2]\n"},
    "spark.code_uri": {"http": "http://example.com/code/", "traversal": "s3://b/../code/", "int": 3},
    "spark.emr.cluster_id": {"empty": "", "shell": "j-ABC; rm -rf /", "lower": "j-abc", "int": 1},
    "spark.emr.release_label": {"empty": "", "shell": "emr-7.5.0;id", "other": "7.5.0"},
    "spark.emr.step_timeout_minutes": {"zero": 0, "negative": -1, **INT_VALUES},
    "spark.emr.log_uri": {"http": "http://x/", "newline": "s3://b/x\n/"},
    "spark.emr_serverless.execution_role_arn": {"not_arn": "role", "shell": "arn:aws:iam::1:role/x;id"},
    "glue.tables": {"empty": {}, "list": ["web_events"], "bad_key": {"Web Events": {}}},
    "glue.tables.web_events.database": NAME_VALUES,
    "glue.tables.web_events.table": {"upper": "Web", "dash": "web-events", **NAME_VALUES},
    "glue.tables.web_events.location": URI_VALUES,
    "glue.tables.web_events.layout": {"unknown": "delta", "int": 1},
    "glue.tables.web_events.granularity": {"unknown": "week", "empty": ""},
    "glue.tables.web_events.partition_keys": {
        "empty": [],
        "string": "dt",
        "bad_name": [{"name": "DT"}],
        "injection": [{"name": "dt'; --"}],
    },
    "glue.tables.web_events.mode": {"unknown": "stream", "int": 1, "events_without_queue": "events"},
    "glue.tables.web_events.events_queue": {
        "without_mode_events": "glue-web-events",
        "fifo": "glue-web-events.fifo",
        "too_long": "q" * 81,
        "int": 5,
        **NAME_VALUES,
    },
    "glue.tables.web_events.wait_for_success_marker": {"string": "yes", "int": 1, "null": None},
    "glue.tables.web_events.success_marker_timeout_minutes": {"zero": 0, **INT_VALUES},
    "glue.tables.cloudtrail.path_template": {
        "missing_key": "{year}/{month}",
        "extra_key": "{year}/{month}/{day}/{hour}",
        "empty": "",
        "int": 1,
    },
    "glue.athena_output_location": URI_VALUES,
    "glue.athena_workgroup": {"empty": "", "shell": "primary;id", "newline": "primary\n"},
    "glue.tables.cloudtrail.crawler_name": {
        "empty": "",
        "shell": "c; id",
        "newline": "c\n",
        "huge": "c" * 1000,
    },
    "reconciliation.landing_uri": URI_VALUES,
    "reconciliation.work_uri": URI_VALUES,
    "reconciliation.ledger_table": {"short": "ab", "space": "recon ledger", **NAME_VALUES},
    "reconciliation.index_table": {"short": "ab", **NAME_VALUES},
    "reconciliation.completeness_window_minutes": {"zero": 0, "too_big": 1441, **INT_VALUES},
    "reconciliation.backlog.batches_per_run": {"zero": 0, **INT_VALUES},
    "reconciliation.backlog.growth": {"negative": -0.1, "above_one": 1.5, "string": "0.5", "bool": True},
    "reconciliation.backlog.max_batches_per_run": {"below_base": 1, "zero": 0},
    "reconciliation.state_part_files": {"zero": 0, "too_many": 1001, **INT_VALUES},
    "reconciliation.prefetch.coalesce_gap_bytes": {"negative": -1, "string": "64k"},
    "reconciliation.prefetch.max_range_bytes": {"tiny": 1, "huge_string": "8MB"},
    "reconciliation.prefetch.threads": {"zero": 0, "too_many": 257},
    "reconciliation.index_writers": {"zero": 0, "too_many": 65},
    "reconciliation.max_in_flight": {"zero": 0, "too_many": 17},
    "iceberg.state_uri": {"file": "file:///tmp/state/", **URI_VALUES},
    "iceberg.tag_workers": {"zero": 0, "too_many": 257, **INT_VALUES},
    "iceberg.commit_retries": {"negative": -1, "too_many": 21},
    "iceberg.tables.orders.backend": {"unknown": "trino"},
    "iceberg.tables.orders.retain_last": {"zero": 0, **INT_VALUES},
    "iceberg.tables.orders.max_snapshot_age_hours": {"negative": -1, "string": "120h"},
    "iceberg.tables.orders.tag_rules": {
        "no_date": [{"name": "daily", "every": "day", "keep_days": 7}],
        "bad_every": [{"name": "d-{date}", "every": "week", "keep_days": 7}],
        "zero_keep": [{"name": "d-{date}", "every": "day", "keep_days": 0}],
        "bad_render": [{"name": "d {date}", "every": "day", "keep_days": 7}],
        "duplicate": [{"name": "d-{date}", "every": "day", "keep_days": 7}] * 2,
    },
    "iceberg.tables.orders.unreferenced.action": {"unknown": "shred"},
    "iceberg.tables.orders.unreferenced.tag.key": {"aws_prefix": "aws:x", "newline": "k\n", "empty": ""},
    "iceberg.tables.orders.lifecycle.transition_days": {"after_expiration": 400, "negative": -1},
    "iceberg.tables.orders.lifecycle.storage_class": {"unknown": "TAPE"},
    "iceberg.tables.orders.orphan_min_age_hours": {"zero": 0, "string": "3d"},
    "iceberg.tables.clickstream.orphan_min_age_hours": {"under_a_day_for_spark": 12},
    "iceberg.tables.orders.compaction.target_file_mb": {"zero": 0, "negative": -1, "string": "128MB"},
    "iceberg.tables.orders.compaction.min_input_files": {"one": 1, **INT_VALUES},
    "iceberg.tables.orders.compaction.max_bytes_per_run": {"tiny": 1000, "string": "10GB", **INT_VALUES},
    "iceberg.tables.orders.compaction.sort_order": {
        "not_a_list": "order_id",
        "upper_case": ["OrderId"],
        "bad_direction": ["order_id sideways"],
        "twice": ["order_id", "order_id desc"],
        "sql": ["order_id; drop table x"],
    },
    "iceberg.tables.orders.compaction.max_small_manifests": {"zero": 0, **INT_VALUES},
    "iceberg.tables.orders.compaction.target_manifest_mb": {"zero": 0, "string": "8MB"},
    "gdpr.requests_table": NAME_VALUES,
    "gdpr.audit_table": NAME_VALUES,
    "gdpr.hmac_conn_id": {"empty": "", "space": "gdpr hmac", "newline": "gdpr\n"},
    "gdpr.subject_id_pattern": {"unanchored": "cust-[0-9]{6}", "invalid": "^cust-[0-9{6}$", "int": 5},
    "gdpr.deadline_days": {"zero": 0, "too_long": 91, **INT_VALUES},
    "gdpr.batch_size": {"zero": 0, "too_big": 1001},
    "gdpr.work_uri": {"file": "file:///tmp/gdpr/", **URI_VALUES},
    "gdpr.datasets": {"empty": {}, "bad_key": {"Bad Key": {}}},
    "gdpr.datasets.payments.format": {"unknown": "delta"},
    "gdpr.datasets.payments.subject_columns": {
        "empty": [],
        "upper": ["Payer"],
        "duplicate": ["payer_id", "payer_id"],
        "injection": ["payer_id; --"],
    },
    "gdpr.datasets.payments.location": {"iceberg_with_hudi_key": "s3://dataplatform-local-lake/x/"},
    "gdpr.datasets.app_logs.engine": {"hudi_on_pyiceberg": "pyiceberg"},
    "gdpr.datasets.app_logs.record_key": {"missing": _DROP, "injection": "log_id; --"},
    "pricing.source": {"unknown": "guess", "empty": ""},
    "pricing.snapshot_dir": {"empty": "", "newline": "include/pricing\n", "nul": "include\x00"},
    "pricing.price_cache_uri": URI_VALUES,
    "pricing.price_cache_hours": {"negative": -1, "string": "24h"},
    "pricing.batch_size": {"zero": 0, "too_big": 1001, **INT_VALUES},
    "pricing.report_period_days": {"zero": 0, "too_long": 3661},
    "pricing.report_group_by": {"unknown": "colour"},
    "pricing.launches_table": NAME_VALUES,
    "reconciliation.completeness_sla_minutes": {"zero": 0, "too_big": 10081, **INT_VALUES},
    "gdpr.alert_days_before_deadline": {"negative": -1, "not_before_deadline": 30, **INT_VALUES},
    "health.findings_table": {"short": "ab", **NAME_VALUES},
    "health.iceberg_maintenance_period_hours": {"zero": 0, "too_long": 745, **INT_VALUES},
    "health.pricing_failed_attempts": {"zero": 0, "too_many": 101, **INT_VALUES},
    "health.glue_freshness_minutes": {
        "unknown_table": {"no_such_table": 60},
        "zero": {"web_events": 0},
        "string": {"web_events": "3h"},
        "list": [180],
    },
    "health.deadlines.iceberg_maintenance_minutes": {"negative": -1, "too_long": 1441, **INT_VALUES},
    "health.deadlines.recon_stateless_behind_minutes": {"negative": -1, **INT_VALUES},
    "health.deadlines.benchmark_pricing_minutes": {"negative": -1, "string": "1h"},
    "pools.spark_jobs.slots": {"zero": 0, "too_many": 1025, **INT_VALUES},
    "pools.glue_api.description": {"empty": "", "newline": "Glue\nloads", "int": 5, "huge": "x" * 301},
    "pools.emr_transient_clusters.slots": {"zero": 0, "too_many": 1025, **INT_VALUES},
    "pools.emr_transient_clusters.description": {"empty": "", "newline": "EMR\nclusters", "int": 5},
}
# Keys that do not exist (typos, or keys of another section), and required keys left out.
UNKNOWN = {
    "top_level": ("reprots_uri", "s3://x/"),
    "aws": ("aws.regoin", "us-east-1"),
    "alerts": ("alerts.topic_arn", "arn:aws:sns:us-east-1:123456789012:x"),
    "spark_emr": ("spark.emr.clusterid", "j-1"),
    "glue_table": ("glue.tables.web_events.partitions", 3),
    "recon": ("reconciliation.max_batches", 5),
    "backlog": ("reconciliation.backlog.grow", 1),
    "iceberg_table": ("iceberg.tables.orders.retain", 3),
    "gdpr": ("gdpr.subject_pattern", "^x$"),
    "gdpr_dataset": ("gdpr.datasets.payments.columns", ["x"]),
    "pricing": ("pricing.currency", "EUR"),
    "health": ("health.findings", "x"),
    "deadlines": ("health.deadlines.recon_minutes", 5),
    "pool": ("pools.iceberg_commits", {"slots": 1, "description": "a pool no task uses"}),
    "pool_key": ("pools.glue_api.include_deferred", True),
    "emr_pool_key": ("pools.emr_transient_clusters.include_deferred", False),
}
REQUIRED = [
    "env",
    "aws.region",
    "reports_uri",
    "alerts",
    "alerts.sns_topic_arn",
    "spark.backend",
    "glue.tables",
    "reconciliation.landing_uri",
    "iceberg.state_uri",
    "gdpr.work_uri",
    "gdpr.datasets",
    "pricing.source",
    "pricing.price_cache_uri",
    "glue.tables.web_events.location",
    "gdpr.datasets.payments.format",
    "pools",
    "pools.glue_api",
    "pools.spark_jobs.slots",
    "pools.emr_transient_clusters",
    "pools.emr_transient_clusters.description",
]


def _with(path: str, value: Any) -> dict:
    config = copy.deepcopy(LOCAL_CONFIG)
    *parents, last = path.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    if value is _DROP:
        node.pop(last, None)
    else:
        node[last] = value
    return config


def _params():
    for path, values in CASES.items():
        for case, value in values.items():
            yield pytest.param(path, value, id=f"{path}-{case}")
    for case, (path, value) in UNKNOWN.items():
        yield pytest.param(path, value, id=f"unknown-{case}")
    for path in REQUIRED:
        yield pytest.param(path, _DROP, id=f"missing-{path}")


@pytest.mark.bad_input
@pytest.mark.parametrize(("path", "value"), list(_params()))
def test_bad_config_key_is_refused_naming_it(lake, tmp_path, path, value):
    from dataplatform.config import ConfigError, load_settings

    target = tmp_path / "config.yaml"
    target.write_text(yaml.safe_dump(_with(path, value), allow_unicode=True))
    message = refuse(lake, lambda: load_settings(target), path.rsplit(".", 1)[-1], ConfigError)
    assert names_key(message, path), f"the error does not name {path}: {message!r}"


def names_key(message: str, path: str) -> bool:
    """The error names the dotted key, or (a check across keys, reported on their parent) the parent's
    dotted key with the key's own name in the reason."""
    parent, _, leaf = path.rpartition(".")
    return (
        path in message or (f"{parent}:" in message and leaf in message) or (not parent and leaf in message)
    )


def test_the_unchanged_config_loads(tmp_path):
    """The control: the file the cases change loads as it is (each case fails for its one change)."""
    from dataplatform.config import load_settings

    target = tmp_path / "config.yaml"
    target.write_text(yaml.safe_dump(_with("env", "local")))
    assert load_settings(target).env == "local"


@pytest.mark.bad_input
@pytest.mark.parametrize("env", ["../local", "local/../aws", "local\n", "", "local;id"])
def test_bad_environment_name_is_refused(lake, monkeypatch, env):
    from dataplatform.config import ConfigError, config_path

    monkeypatch.delenv("DATAPLATFORM_CONFIG", raising=False)
    monkeypatch.setenv("DATAPLATFORM_ENV", env)
    refuse(lake, config_path, "DATAPLATFORM_ENV", ConfigError)

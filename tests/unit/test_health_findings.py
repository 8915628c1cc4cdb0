"""The lake_health findings as pure functions of the figures and the config's thresholds: each rule at,
below and above its threshold; the alert text of a finding; the states of a block."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from dataplatform import alerts
from dataplatform.config import load_settings
from dataplatform.health import findings, open_findings
from dataplatform.health.figures import _period_starts, worst

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 5, 15, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def config():
    return load_settings()


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def test_gdpr_requests_near_their_deadline_warn_and_overdue_ones_fail(config):
    figures = {
        "urgent": [
            {
                "request_id": "req-late",
                "status": "FAILED",
                "deadline": "x",
                "days_left": -1.5,
                "overdue": True,
            },
            {
                "request_id": "req-soon",
                "status": "PENDING",
                "deadline": "y",
                "days_left": 2.0,
                "overdue": False,
            },
        ]
    }
    late, soon = findings.gdpr_findings(figures, config, NOW)
    assert (late["id"], late["severity"], late["dag_id"]) == (
        "gdpr:overdue:req-late",
        "failing",
        "gdpr_erasure",
    )
    assert "past its deadline x by 1.5 days" in late["summary"]
    assert (soon["id"], soon["severity"]) == ("gdpr:deadline_near:req-soon", "warning")
    assert "within 7 days" in soon["summary"]


def recon(window_end: datetime | None) -> dict:
    window = (
        None
        if window_end is None
        else {"start": iso(window_end - timedelta(hours=1)), "end": iso(window_end), "reason": "gap"}
    )
    return {"first_incomplete_window": window, "incomplete_windows": 1 if window else 0}


def test_an_incomplete_reconciliation_window_is_a_finding_only_past_the_sla(config):
    sla = config.reconciliation.completeness_sla_minutes
    assert findings.reconciliation_findings(recon(None), config, NOW) == []
    assert findings.reconciliation_findings(recon(NOW - timedelta(minutes=sla)), config, NOW) == []
    (late,) = findings.reconciliation_findings(recon(NOW - timedelta(minutes=sla + 1)), config, NOW)
    assert late["id"] == f"reconciliation:incomplete_window:{iso(NOW - timedelta(minutes=sla + 61))}"
    assert f"{sla + 1} minutes after its end (SLA {sla} minutes): gap" in late["summary"]


def glue_table(name: str, lag: int | None, error: str | None = None) -> dict:
    return {
        "table": name,
        "identifier": f"demo_lake.{name}",
        "granularity": "hour",
        "newest_partition": None if lag is None else ["2026-12-05", "10"],
        "lag_minutes": lag,
        "freshness_minutes": 180,
        "lookback_partitions": 1000,
        "error": error,
    }


def test_glue_tables_older_than_their_freshness_or_without_partitions_are_findings(config):
    tables = [
        glue_table("fresh", 180),
        glue_table("stale", 181),
        glue_table("empty", None),
        glue_table("missing", None, error="EntityNotFoundException: no table"),
    ]
    found = findings.glue_findings({"tables": tables}, config, NOW)
    assert [f["id"] for f in found] == ["glue:stale:stale", "glue:stale:empty"]
    assert "ended 181 minutes ago (expected within 180)" in found[0]["summary"]
    assert "no partition in the last 1000 hours" in found[1]["summary"]


def test_iceberg_tables_not_maintained_for_two_periods_are_findings(config):
    def table(name, hours, error=None):
        return {
            "table": name,
            "identifier": f"demo_lake.{name}",
            "hours_since_maintenance": hours,
            "last_maintenance": None if hours is None else "then",
            "error": error,
        }

    figures = {
        "maintenance_period_hours": 24,
        "tables": [
            table("ok", 48),
            table("late", 48.01),
            table("never", None),
            table("gone", None, "NoSuch"),
        ],
    }
    found = findings.iceberg_findings(figures, config, NOW)
    assert [f["id"] for f in found] == [
        "iceberg:maintenance_overdue:late",
        "iceberg:maintenance_overdue:never",
    ]
    assert "never maintained (expected within 48 hours)" in found[1]["summary"]


def test_launches_that_failed_pricing_n_times_are_findings_with_a_short_reason(config):
    figures = {
        "failed_attempts": 3,
        "repeatedly_failed": [{"launch_id": "L1", "attempts": 4, "reason": "no price\n" + "x" * 500}],
    }
    (found,) = findings.pricing_findings(figures, config, NOW)
    assert found["id"] == "pricing:pricing_failed:L1"
    assert "failed pricing 4 times (alert at 3): no price xxx" in found["summary"]
    assert found["summary"].endswith("...") and "\n" not in found["summary"]


def test_a_finding_alert_names_the_finding_in_its_subject_and_its_pipeline_in_the_message():
    item = {
        "finding_id": "gdpr:overdue:req-1",
        **findings.finding("gdpr", "overdue", "req-1", "failing", "gdpr_erasure", "request req-1 is late"),
        "opened_at": iso(NOW),
    }
    alert = open_findings.finding_alert(alerts.FINDING, item, "local", "scheduled__x")
    assert alerts.subject(alert) == "[local] lake_health: FINDING: gdpr:overdue:req-1"
    text = alerts.message(alert)
    assert "failing: request req-1 is late" in text
    assert f"pipeline gdpr, DAG gdpr_erasure, open since {iso(NOW)}" in text
    cleared = open_findings.finding_alert(alerts.FINDING_CLEARED, item, "local", "scheduled__y")
    assert alerts.subject(cleared) == "[local] lake_health: CLEARED: gdpr:overdue:req-1"


def test_the_overall_state_is_the_worst_and_unknown_ranks_below_a_finding():
    assert worst([]) == "ok"
    assert worst(["ok", "unknown"]) == "unknown"
    assert worst(["unknown", "warning", "ok"]) == "warning"
    assert worst(["warning", "failing"]) == "failing"


@pytest.mark.parametrize("granularity", ["hour", "day", "month"])
def test_glue_lookback_periods_step_back_one_partition_at_a_time(granularity):
    starts = list(itertools.islice(_period_starts(NOW, granularity), 14))
    assert len(set(starts)) == 14 and starts == sorted(starts, reverse=True)
    first = {
        "hour": datetime(2026, 12, 5, 15, tzinfo=UTC),
        "day": datetime(2026, 12, 5, tzinfo=UTC),
        "month": datetime(2026, 12, 1, tzinfo=UTC),
    }[granularity]
    assert starts[0] == first
    if granularity == "month":
        assert starts[1] == datetime(2026, 11, 1, tzinfo=UTC) and starts[13] == datetime(
            2025, 11, 1, tzinfo=UTC
        )

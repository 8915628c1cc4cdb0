"""Glue table configs for the partition loader's tests, built the way ``glue.tables`` entries are."""

from __future__ import annotations

from dataplatform.config import GlueTable

YEAR_MONTH_DAY = (
    {"name": "year", "format": "%Y"},
    {"name": "month", "format": "%m"},
    {"name": "day", "format": "%d"},
)
HOUR = {"name": "hour", "format": "%H"}


def glue_table(
    name: str, keys, *, template: str | None = None, granularity="day", bucket="lake"
) -> GlueTable:
    """A table ``db.<name>`` at ``s3://<bucket>/<name>/``: hive layout, or ``template`` when given."""
    return GlueTable(
        database="db",
        table=name,
        location=f"s3://{bucket}/{name}/",
        layout="template" if template else "hive",
        path_template=template,
        granularity=granularity,
        partition_keys=list(keys),
    )

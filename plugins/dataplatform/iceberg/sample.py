"""Sample Iceberg tables written by pyiceberg, for the demo, the tests and the benchmark.

``write_sample_table`` creates a partitioned table (``order_id``, ``region``, ``amount_cents``,
``updated_at``) and commits ``commits`` overwrites: each replaces the whole table with new rows, one data
file per region, so the table keeps a few live files while its history references many (the shape that
gives expiry something to unreference). ``appends`` adds snapshots that only add files.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from pyiceberg.exceptions import NamespaceAlreadyExistsError
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import LongType, NestedField, StringType, TimestamptzType

SCHEMA = Schema(
    NestedField(1, "order_id", LongType(), required=False),
    NestedField(2, "region", StringType(), required=False),
    NestedField(3, "amount_cents", LongType(), required=False),
    NestedField(4, "updated_at", TimestamptzType(), required=False),
)
SPEC = PartitionSpec(PartitionField(source_id=2, field_id=1000, transform=IdentityTransform(), name="region"))
ARROW_SCHEMA = pa.schema(
    [
        ("order_id", pa.int64()),
        ("region", pa.string()),
        ("amount_cents", pa.int64()),
        ("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)
EPOCH = datetime(2024, 3, 1, tzinfo=UTC)


def regions(n: int) -> list[str]:
    return [f"r{i:02d}" for i in range(n)]


def sample_rows(version: int, n_regions: int, rows_per_region: int = 2) -> pa.Table:
    """Deterministic rows of one commit: every region, ``rows_per_region`` orders each."""
    ids, region_col, amounts, times = [], [], [], []
    for r, region in enumerate(regions(n_regions)):
        for i in range(rows_per_region):
            order = r * rows_per_region + i
            ids.append(order)
            region_col.append(region)
            amounts.append(1000 * version + order)
            times.append(EPOCH + timedelta(minutes=version))
    return pa.Table.from_arrays(
        [
            pa.array(ids, pa.int64()),
            pa.array(region_col),
            pa.array(amounts, pa.int64()),
            pa.array(times, ARROW_SCHEMA.field(3).type),
        ],
        schema=ARROW_SCHEMA,
    )


def create_sample_table(catalog, identifier: str, location: str) -> Table:
    namespace = identifier.rsplit(".", 1)[0]
    with contextlib.suppress(NamespaceAlreadyExistsError):
        catalog.create_namespace(namespace)
    return catalog.create_table(identifier, schema=SCHEMA, location=location.rstrip("/"), partition_spec=SPEC)


def write_sample_table(
    catalog, identifier: str, location: str, commits: int, n_regions: int = 4, rows_per_region: int = 2
) -> Table:
    """A new table with ``commits`` full overwrites. pyiceberg commits a delete and an append snapshot for
    each but the first (the table is empty then), so the table ends with 2 x ``commits`` - 1 snapshots,
    and ``commits`` x ``n_regions`` data files written, ``n_regions`` of them live."""
    table = create_sample_table(catalog, identifier, location)
    for version in range(commits):
        table.overwrite(sample_rows(version, n_regions, rows_per_region))
    return table


def append_rows(table: Table, version: int, n_regions: int = 1, rows_per_region: int = 1) -> Table:
    """One append snapshot with new order ids (offset by ``version``)."""
    rows = sample_rows(version, n_regions, rows_per_region)
    rows = rows.set_column(
        0, "order_id", pa.array([10_000 * version + i for i in range(rows.num_rows)], pa.int64())
    )
    table.append(rows)
    return table

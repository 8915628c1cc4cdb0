"""Tables with personal data, written by pyiceberg, for the demo and the tests.

- ``customer_profiles`` (partitioned by ``country``): one row per customer, then profile updates appended
  in later commits, so a customer's rows are spread over several files and snapshots.
- ``payments`` (unpartitioned): payments between customers, appended in batches; a customer appears as
  payer in some rows and as payee in others (two subject columns).

Customer ids look like ``cust-000042`` (the local config's ``subject_id_pattern``).
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import LongType, NestedField, StringType, TimestamptzType

COUNTRIES = ("de", "fr", "nl")
EPOCH = datetime(2024, 3, 1, tzinfo=UTC)

PROFILE_SCHEMA = Schema(
    NestedField(1, "customer_id", StringType(), required=False),
    NestedField(2, "country", StringType(), required=False),
    NestedField(3, "email", StringType(), required=False),
    NestedField(4, "version", LongType(), required=False),
    NestedField(5, "updated_at", TimestamptzType(), required=False),
)
PROFILE_SPEC = PartitionSpec(
    PartitionField(source_id=2, field_id=1000, transform=IdentityTransform(), name="country")
)
PAYMENT_SCHEMA = Schema(
    NestedField(1, "payment_id", LongType(), required=False),
    NestedField(2, "payer_id", StringType(), required=False),
    NestedField(3, "payee_id", StringType(), required=False),
    NestedField(4, "amount_cents", LongType(), required=False),
    NestedField(5, "paid_at", TimestamptzType(), required=False),
)


def customer_id(number: int) -> str:
    return f"cust-{number:06d}"


def profile_rows(customers: range, version: int) -> pa.Table:
    ids = [customer_id(n) for n in customers]
    return pa.Table.from_pydict(
        {
            "customer_id": ids,
            "country": [COUNTRIES[n % len(COUNTRIES)] for n in customers],
            "email": [f"{cid}.v{version}@example.com" for cid in ids],
            "version": [version] * len(ids),
            "updated_at": [EPOCH + timedelta(days=version)] * len(ids),
        },
        schema=PROFILE_SCHEMA.as_arrow(),
    )


def payment_rows(batch: int, n_customers: int, per_batch: int) -> pa.Table:
    first = batch * per_batch
    numbers = range(first, first + per_batch)
    return pa.Table.from_pydict(
        {
            "payment_id": list(numbers),
            "payer_id": [customer_id(n % n_customers) for n in numbers],
            "payee_id": [customer_id((n * 7 + 3) % n_customers) for n in numbers],
            "amount_cents": [100 + n % 9_000 for n in numbers],
            "paid_at": [EPOCH + timedelta(hours=n) for n in numbers],
        },
        schema=PAYMENT_SCHEMA.as_arrow(),
    )


def _create(catalog, identifier: str, location: str, schema: Schema, spec: PartitionSpec | None) -> Table:
    with contextlib.suppress(NamespaceAlreadyExistsError):
        catalog.create_namespace(identifier.rsplit(".", 1)[0])
    with contextlib.suppress(NoSuchTableError):
        catalog.purge_table(identifier)
    kwargs = {"partition_spec": spec} if spec else {}
    return catalog.create_table(identifier, schema=schema, location=location.rstrip("/"), **kwargs)


def write_profiles(catalog, identifier: str, location: str, n_customers: int = 30, updates: int = 2) -> Table:
    """Every customer once, then ``updates`` appends of new versions for every third customer."""
    table = _create(catalog, identifier, location, PROFILE_SCHEMA, PROFILE_SPEC)
    table.append(profile_rows(range(n_customers), 0))
    for version in range(1, updates + 1):
        table.append(profile_rows(range(version % 3, n_customers, 3), version))
    return table


def write_payments(
    catalog, identifier: str, location: str, n_customers: int = 30, batches: int = 3, per_batch: int = 40
) -> Table:
    table = _create(catalog, identifier, location, PAYMENT_SCHEMA, None)
    for batch in range(batches):
        table.append(payment_rows(batch, n_customers, per_batch))
    return table

"""DynamoDB tables the pipelines create for themselves: on demand, created once whoever comes first.

In AWS the tables are usually made by infrastructure code; creating them from the first task that needs
them keeps a fresh environment (and the local stack) working without a manual step, and checking the key
schema of an existing table catches a name that points at someone else's table.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

log = logging.getLogger(__name__)


class TableSchemaError(ValueError):
    """A table of that name exists with another key schema or without an index this code queries."""


class TableNotCreatedError(LookupError):
    """A table its pipeline creates on its first run is not there yet (a fresh stack, a new account)."""


@contextlib.contextmanager
def table_must_exist(table: str, created_by: str) -> Iterator[None]:
    """Turn DynamoDB's ``ResourceNotFoundException`` for ``table`` into a ``TableNotCreatedError`` that
    names the table and what creates it: the CLIs and the lake-health page say the same sentence, not
    botocore's."""
    try:
        yield
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
        raise TableNotCreatedError(
            f"DynamoDB table {table} does not exist yet: {created_by} creates it"
        ) from None


def error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


_serializer, _deserializer = TypeSerializer(), TypeDeserializer()


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    """Plain values (str, int, Decimal, bool, lists, dicts) as a DynamoDB item; ``None`` values left out."""
    return {name: _serializer.serialize(value) for name, value in values.items() if value is not None}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB item as plain values (numbers as ``Decimal``)."""
    return {name: _deserializer.deserialize(value) for name, value in item.items()}


def key(hash_key: str, range_key: str | None = None) -> list[dict[str, str]]:
    schema = [{"AttributeName": hash_key, "KeyType": "HASH"}]
    if range_key:
        schema.append({"AttributeName": range_key, "KeyType": "RANGE"})
    return schema


def ensure_table(
    dynamodb: Any,
    table: str,
    key_schema: list[dict[str, str]],
    string_attributes: list[str],
    indexes: dict[str, list[dict[str, str]]] | None = None,
    wait_attempts: int = 90,
) -> bool:
    """Create ``table`` (on demand; ``indexes``: GSI name -> key schema, all attributes projected; every
    key attribute is a string) unless it exists, wait until it is ACTIVE, and check that an existing one
    has the same key schema and the indexes. True when this call created it."""
    try:
        dynamodb.create_table(
            TableName=table,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": name, "AttributeType": "S"} for name in string_attributes
            ],
            KeySchema=key_schema,
            **(
                {
                    "GlobalSecondaryIndexes": [
                        {"IndexName": name, "KeySchema": schema, "Projection": {"ProjectionType": "ALL"}}
                        for name, schema in indexes.items()
                    ]
                }
                if indexes
                else {}
            ),
        )
        created = True
    except ClientError as exc:
        # It exists, or another task created it a moment ago.
        if error_code(exc) != "ResourceInUseException":
            raise
        created = False
    dynamodb.get_waiter("table_exists").wait(
        TableName=table, WaiterConfig={"Delay": 2, "MaxAttempts": wait_attempts}
    )
    description = dynamodb.describe_table(TableName=table)["Table"]
    if description["KeySchema"] != key_schema:
        raise TableSchemaError(
            f"DynamoDB table {table} exists with key schema {description['KeySchema']}, expected {key_schema}"
        )
    missing = set(indexes or ()) - {
        index["IndexName"] for index in description.get("GlobalSecondaryIndexes", [])
    }
    if missing:
        raise TableSchemaError(f"DynamoDB table {table} exists without the index(es) {sorted(missing)}")
    log.info("DynamoDB table %s %s", table, "created" if created else "already exists")
    return created

"""GDPR erasure: requests (DynamoDB), record-level deletes in Iceberg and Hudi tables, purge of the old
versions that still hold the rows, verification and an append-only audit trail."""

"""Registering statistics files on an Iceberg table, as Spark or Trino would (pyiceberg writes none)."""

from __future__ import annotations

from pyiceberg.table.statistics import BlobMetadata, PartitionStatisticsFile, StatisticsFile
from pyiceberg.table.update import SetPartitionStatisticsUpdate, SetStatisticsUpdate

from dataplatform.s3.objects import split_uri


def register_statistics(s3, table, snapshot_id: int, body: bytes) -> tuple[str, str]:
    """A Puffin statistics file and a partition-statistics file for ``snapshot_id``, both holding
    ``body``, put in S3 and registered in one commit; their URIs."""
    stats_path = f"{table.location()}/metadata/stats-{snapshot_id}.puffin"
    partition_stats_path = f"{table.location()}/metadata/partition-stats-{snapshot_id}.parquet"
    for path in (stats_path, partition_stats_path):
        bucket, key = split_uri(path)
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    blob = BlobMetadata(
        type="apache-datasketches-theta-v1", snapshot_id=snapshot_id, sequence_number=1, fields=[1]
    )
    table.catalog.commit_table(
        table,
        (),
        (
            SetStatisticsUpdate(
                statistics=StatisticsFile(
                    snapshot_id=snapshot_id,
                    statistics_path=stats_path,
                    file_size_in_bytes=len(body),
                    file_footer_size_in_bytes=4,
                    blob_metadata=[blob],
                )
            ),
            SetPartitionStatisticsUpdate(
                partition_statistics=PartitionStatisticsFile(
                    snapshot_id=snapshot_id,
                    statistics_path=partition_stats_path,
                    file_size_in_bytes=len(body),
                )
            ),
        ),
    )
    return stats_path, partition_stats_path

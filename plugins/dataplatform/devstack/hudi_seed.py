"""Write Hudi tables commit by commit: ``spark-submit hudi_seed.py '<json>'`` with the Hudi bundle.

Hudi's writer exists only in the JVM (no Python library writes a Hudi timeline), so the demo's and the
tests' Hudi tables are written by this small PySpark program, submitted with the local backend's conf
(``dataplatform.spark.local_conf`` of ``gdpr.spark_erasure.hudi_conf()``: the locked bundle, S3A on moto).
It lives in the devstack, not in ``spark_jobs/``: it seeds demo data and is never shipped to EMR.
``seed_command`` builds its argv; the program imports nothing of this repository but pyspark.

The JSON: ``{"tables": [{"location", "name", "table_type", "record_key", "partition_field",
"precombine_field", "schema" (Spark DDL), "commits": [{"operation": "insert" | "upsert", "rows": [[...]]}]}]}``.
Each table is partitioned Hive-style, indexed with BLOOM, and keeps column statistics in its metadata
table (what makes a delete's tombstones matter). Prints ``seeded <name>: <n> commits`` per table.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def write_options(table: Mapping[str, Any], operation: str) -> dict[str, str]:
    return {
        "hoodie.table.name": table["name"],
        "hoodie.datasource.write.table.type": table["table_type"],
        "hoodie.datasource.write.operation": operation,
        "hoodie.datasource.write.recordkey.field": table["record_key"],
        "hoodie.datasource.write.partitionpath.field": table["partition_field"],
        "hoodie.datasource.write.precombine.field": table["precombine_field"],
        "hoodie.datasource.write.hive_style_partitioning": "true",
        "hoodie.index.type": "BLOOM",
        "hoodie.metadata.enable": "true",
        "hoodie.metadata.index.column.stats.enable": "true",
        # Keep every seeded commit on the timeline and every file slice on storage: the erasure must
        # find the subjects in old slices and old commits, not only in the latest.
        "hoodie.clean.automatic": "false",
        # Merge-on-read: updates stay in log files (no compaction while seeding).
        "hoodie.compact.inline": "false",
    }


def seed(spark: Any, tables: Sequence[Mapping[str, Any]]) -> None:
    for table in tables:
        for commit in table["commits"]:
            rows = [tuple(row) for row in commit["rows"]]
            (
                spark.createDataFrame(rows, table["schema"])
                .write.format("hudi")
                .options(**write_options(table, commit["operation"]))
                .mode("append")
                .save(table["location"].rstrip("/"))
            )
        print(f"seeded {table['name']}: {len(table['commits'])} commits", flush=True)


def seed_command(tables: Sequence[Mapping[str, Any]], endpoint_url: str | None, region: str) -> list[str]:
    """The local ``spark-submit`` of this program for ``tables`` (run it with ``local_spark_env``)."""
    return hudi_submit_command(Path(__file__).resolve(), {"tables": list(tables)}, endpoint_url, region)


def hudi_submit_command(application: Path, payload: Any, endpoint_url: str | None, region: str) -> list[str]:
    """A local ``spark-submit`` of a devstack PySpark program with the Hudi bundle and S3A on
    ``endpoint_url``, its one argument ``payload`` as JSON."""
    from dataplatform import spark as spark_spec
    from dataplatform.gdpr.spark_erasure import hudi_conf

    conf = {**spark_spec.local_conf(hudi_conf(), endpoint_url, region), "spark.ui.enabled": "false"}
    return spark_spec.local_spark_submit_command(
        spark_submit=None,
        master="local[2]",
        conf=conf,
        application=str(application),
        application_args=[json.dumps(payload)],
    )


def run_hudi_program(
    command: list[str], endpoint_url: str | None, region: str, credentials: tuple, what: str
) -> str:
    """Run a ``hudi_submit_command`` with the credentials in its environment; its stdout, or an error
    saying ``what`` failed with the tail of Spark's output."""
    import os
    import subprocess

    from dataplatform import spark as spark_spec

    run = subprocess.run(
        command,
        env=spark_spec.local_spark_env(
            os.environ, credentials=credentials, region=region, endpoint_url=endpoint_url
        ),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if run.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}")
    return run.stdout


def main(argv: Sequence[str]) -> int:
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.appName("hudi_seed").getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    try:
        seed(spark, json.loads(argv[0])["tables"])
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

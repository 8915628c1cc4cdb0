"""Read Hudi tables' latest rows: ``spark-submit hudi_read.py '{"locations": {name: uri}}'`` (Hudi bundle).

Hudi's reader, like its writer, lives in the JVM; ``devstack.lake_state`` compares the GDPR Hudi tables of
two runs with it. Hudi's ``_hoodie_*`` columns are left out: they hold commit instants and file names,
which differ between any two runs of the same writes. Prints one line ``RESULT {name: [row, ...]}``.
Imports nothing of this repository but pyspark (the command is built by ``read_command``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

RESULT = "RESULT "


def read_latest(spark: Any, locations: Mapping[str, str]) -> dict[str, list[dict]]:
    tables = {}
    for name, location in locations.items():
        frame = spark.read.format("hudi").load(location.rstrip("/"))
        columns = [c for c in frame.columns if not c.startswith("_hoodie_")]
        tables[name] = [row.asDict() for row in frame.select(*columns).collect()]
    return tables


def read_command(locations: Mapping[str, str], endpoint_url: str | None, region: str) -> list[str]:
    """The local ``spark-submit`` of this program (run it with ``spark.local_spark_env``)."""
    from dataplatform.devstack.hudi_seed import hudi_submit_command

    return hudi_submit_command(Path(__file__).resolve(), {"locations": dict(locations)}, endpoint_url, region)


def main(argv: Sequence[str]) -> int:
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.appName("hudi_read").getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    try:
        print(RESULT + json.dumps(read_latest(spark, json.loads(argv[0])["locations"]), default=str))
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

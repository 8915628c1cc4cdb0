"""Read Hudi tables back for the tests (``spark-submit`` with the Hudi bundle; see ``tests/hudi_helpers.py``).

Argument: ``{"locations": {name: uri}, "spec": <a gdpr job spec>, "columns": [...]}``. Prints one line
``RESULT <json>``: per table the latest rows, and the subject rows at every completed commit, active or
archived, by time travel (``"cleaned"`` where Hudi refuses to travel because the cleaner removed the files).
"""

import json
import sys

from pyspark.sql import SparkSession

from spark_jobs import gdpr_hudi_delete as job
from spark_jobs.common import hudi_layout
from spark_jobs.common.storage import Storage


def inspect(spark, locations, spec, columns):
    storage = Storage(endpoint_url=spec.get("aws_endpoint_url"), region=spec.get("region"))
    out = {}
    for name, location in locations.items():
        table_spec = {**spec, "location": location}
        commits = {}
        for commit in hudi_layout.all_commits(spark, storage, location):
            try:
                commits[commit.instant] = job.count_subject_rows(
                    job.read_table(spark, location, commit.as_of), table_spec
                )
            except Exception as exc:
                if job.CLEANED_MESSAGE not in str(exc):
                    raise
                commits[commit.instant] = "cleaned"
        latest = job.read_table(spark, location).select(*columns)
        out[name] = {"latest": {row[0]: list(row)[1:] for row in latest.collect()}, "commits": commits}
    return out


if __name__ == "__main__":
    arguments = json.loads(sys.argv[1])
    session = SparkSession.builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    print(
        "RESULT "
        + json.dumps(inspect(session, arguments["locations"], arguments["spec"], arguments["columns"]))
    )
    session.stop()

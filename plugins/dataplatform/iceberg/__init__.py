"""Iceberg table maintenance with pyiceberg (Glue catalog, S3): snapshot tags, expiry with retain-last,
S3 tags and lifecycle for unreferenced and created files, orphan files, archive tables.

Modules, in the order a run uses them: ``catalog`` (pyiceberg catalog from connection properties),
``snapshots`` (which tags to make, which snapshots to expire: pure functions of the table metadata),
``files`` (every file a set of snapshots reaches), ``state`` (what the last run saw), ``maintenance`` (the steps of one
run), ``spark_sql`` (the same steps as Iceberg Spark procedures, for the EMR backend; the SQL itself is
in ``spark_jobs.common.iceberg_sql``, shipped with the job), ``archive`` (register an older metadata file
as a table), ``sample`` (tables for the demo, tests and benchmark). The S3 object helpers (batched
deletes, merged tagging, lifecycle rules, listings of objects and versions) are ``dataplatform.s3.objects``:
GDPR erasure uses them too. Nothing here imports Airflow.
"""

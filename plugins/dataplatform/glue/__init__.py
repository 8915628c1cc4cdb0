"""Glue partition loading: layouts, S3 discovery, batched catalog writes. Imports no Airflow."""

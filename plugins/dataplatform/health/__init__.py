"""The lake's health: per pipeline the figures that matter, the findings (domain deadlines Airflow cannot
see) and the alert-once bookkeeping of the hourly ``lake_health`` DAG. No Airflow import.

- ``figures``: what the lake-health page, the ``lake_health`` DAG and ``python -m dataplatform.health
  status`` show (one source of truth; the recon and gdpr CLIs read the same domain functions).
- ``findings``: pure functions from the figures to findings, thresholds from the config.
- ``open_findings``: the findings kept open in DynamoDB, so each alerts once and its clearing once.
"""

"""PySpark entry points: pure DataFrame -> DataFrame functions plus a small ``main(argv)`` per job.

Shipped to EMR as one zip (``python -m dataplatform.spark package dist/spark_jobs.zip``, passed as
``--py-files``); locally the repository root is on the ``PYTHONPATH`` of ``spark-submit``. Nothing here
imports Airflow or the ``dataplatform`` package: jobs run on cluster nodes that have neither.
"""

"""The embedded local stack: moto server, Airflow environment, demo data, `make demo` / `make up`.

Used by the Makefile, the tests and the benchmarks; never by DAGs or by code that runs in AWS.
"""

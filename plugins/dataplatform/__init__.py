"""The data platform library: domain modules per pipeline, and the Airflow operators that wrap them."""

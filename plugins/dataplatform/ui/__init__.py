"""The lake-health page in the Airflow UI: the HTML (``page``, ``chart``; no Airflow import) and the
FastAPI app the plugin ``plugins/lake_health_plugin.py`` mounts (``app``; Airflow's auth)."""

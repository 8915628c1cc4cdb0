"""The lake-health page in the Airflow UI (Airflow 3 plugin).

``fastapi_apps`` mounts the page's app (``dataplatform.ui.app``, protected by Airflow's auth) at
``<base>/lake-health``; ``external_views`` puts "Lake health" in the navigation, where the UI shows the
page in a frame. Its ``href`` is relative (no leading slash): the UI resolves it against its base URL, so
the page works behind a path prefix (``[api] base_url`` with a path).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from dataplatform.ui.app import app

URL_PREFIX = "/lake-health"


class LakeHealthPlugin(AirflowPlugin):
    name = "lake_health"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Lake health"}]
    external_views = [
        {
            "name": "Lake health",
            "href": URL_PREFIX.lstrip("/") + "/",
            "url_route": "lake-health",
            "destination": "nav",
        }
    ]

"""The lake-health plugin's app, mounted as Airflow mounts it but under a path prefix
(``/team-a/airflow/lake-health``, as behind a reverse proxy with ``[api] base_url`` ending in
``/team-a/airflow``), with Airflow's own auth manager, on the moto server's lake.

* Unauthenticated: 401; a forged token: 403; a user the auth manager does not let read DAGs: 403.
* Authenticated (Bearer header or the UI's ``_token`` cookie): 200, with the figures of the lake as
  DynamoDB holds it (read here directly), and every link relative, resolving under the prefix; the report
  link opens the run's report (escaped).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from urllib.parse import urljoin, urlparse

import pytest

pytestmark = pytest.mark.integration

PREFIX = "/team-a/airflow"
HOSTILE = "<img src=x onerror=alert(1)>"


class Urls(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in ("href", "src") and value]


@pytest.fixture(scope="module")
def auth(airflow_db):
    """Airflow's configured auth manager (the simple auth manager), initialised as the API server does."""
    from airflow.api_fastapi.app import init_auth_manager

    return init_auth_manager()


@pytest.fixture(scope="module")
def client(auth):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from lake_health_plugin import LakeHealthPlugin

    (mounted,) = LakeHealthPlugin.fastapi_apps
    outer = FastAPI()
    outer.mount(PREFIX + mounted["url_prefix"], mounted["app"])
    return TestClient(outer)


def token(auth, role: str | None) -> str:
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return auth.generate_jwt(SimpleAuthManagerUser(username="ops", role=role))


@pytest.fixture
def lake(aws):
    """GDPR requests (two open, one of them overdue) and a gdpr_erasure run's report, written the way the
    product writes them."""
    from dataplatform import aws as clients
    from dataplatform.config import settings
    from dataplatform.gdpr import requests
    from dataplatform.reports import write_run_report

    config = settings()
    dynamodb = clients.client("dynamodb")
    requests.create_requests_table(dynamodb, config.gdpr.requests_table)
    now = datetime.now(UTC)
    for request_id, days_ago in (("req-new", 1), ("req-old", config.gdpr.deadline_days + 2)):
        requests.submit_request(
            dynamodb,
            config.gdpr.requests_table,
            request_id,
            "cust-000001",
            now - timedelta(days=days_ago),
            config.gdpr.deadline_days,
        )
    aws.s3.create_bucket(Bucket=urlparse(config.reports_uri).netloc)
    write_run_report(
        config.reports_uri, "gdpr_erasure", "manual__1", "requests", {"summary": HOSTILE}, s3=aws.s3
    )
    return dynamodb


@pytest.mark.parametrize("path", ["/", "/report?dag_id=gdpr_erasure&run_id=manual__1"])
def test_unauthenticated_requests_are_refused(client, auth, path):
    url = PREFIX + "/lake-health" + path
    assert client.get(url).status_code == 401
    assert client.get(url, headers={"Authorization": "Bearer not-a-jwt"}).status_code == 403
    # Signed, but for a user without a role: the auth manager lets nobody read DAGs then.
    assert client.get(url, headers={"Authorization": f"Bearer {token(auth, None)}"}).status_code == 403


def test_an_authenticated_user_gets_the_page_with_the_lakes_figures(client, auth, lake):
    from dataplatform.config import settings

    # What DynamoDB holds, read here with a scan (not through the health functions).
    items = lake.scan(TableName=settings().gdpr.requests_table)["Items"]
    now = datetime.now(UTC)
    open_requests = [item for item in items if item["status"]["S"] != "COMPLETED"]
    overdue = [item for item in open_requests if datetime.fromisoformat(item["deadline"]["S"]) < now]
    assert (len(open_requests), len(overdue)) == (2, 1)

    response = client.get(
        PREFIX + "/lake-health/", headers={"Authorization": f"Bearer {token(auth, 'viewer')}"}
    )
    assert response.status_code == 200, response.text
    html = response.text
    assert re.search(r'data-figure="gdpr\.open"><th>Open</th><td class="number"[^>]*>2</td>', html), html
    assert re.search(r'data-figure="gdpr\.overdue"><th>Overdue</th><td class="number"[^>]*>1</td>', html)
    assert 'data-row="req-old"' in html and "cust-000001" not in html

    # The UI's login leaves the token in the `_token` cookie: the page takes it as the REST API does.
    client.cookies.set("_token", token(auth, "viewer"))
    try:
        assert client.get(PREFIX + "/lake-health/").text.count('data-pipeline="') == 5
    finally:
        client.cookies.clear()


def test_every_link_stays_under_the_prefix_and_the_report_link_opens_the_report(client, auth, lake):
    headers = {"Authorization": f"Bearer {token(auth, 'viewer')}"}
    page_url = f"http://testserver{PREFIX}/lake-health/"
    parser = Urls()
    parser.feed(client.get(page_url, headers=headers).text)
    resolved = [urljoin(page_url, url) for url in parser.urls]
    assert resolved and all(url.startswith(f"http://testserver{PREFIX}/") for url in resolved), resolved
    assert f"http://testserver{PREFIX}/dags/gdpr_erasure" in resolved
    (report_url,) = [url for url in resolved if "/lake-health/report?" in url and "gdpr_erasure" in url]
    report = client.get(report_url, headers=headers)
    assert report.status_code == 200
    assert "&lt;img src=x onerror=alert(1)&gt;" in report.text and HOSTILE not in report.text
    # Only the page's DAGs: a report key is never built from an arbitrary id.
    assert client.get(report_url.replace("gdpr_erasure", "..%2Fx"), headers=headers).status_code == 404


def test_a_pipeline_not_run_yet_says_what_creates_its_tables(client, auth, lake):
    """No reconciliation or pricing run yet: their blocks name the missing table and the run that creates
    it (the CLIs' sentence), not botocore's ResourceNotFoundException."""
    from html import escape

    from dataplatform.config import settings

    config = settings()
    existing = lake.list_tables()["TableNames"]
    assert config.reconciliation.ledger_table not in existing
    assert config.pricing.launches_table not in existing

    headers = {"Authorization": f"Bearer {token(auth, 'viewer')}"}
    html = client.get(PREFIX + "/lake-health/", headers=headers).text
    for table, created_by in [
        (config.reconciliation.ledger_table, "the first recon_stateless run (setup_tables)"),
        (config.pricing.launches_table, "the first benchmark_pricing run"),
    ]:
        assert escape(f"DynamoDB table {table} does not exist yet: {created_by} creates it") in html
    assert "ResourceNotFoundException" not in html

"""The lake-health page in a real browser: Debian's Chromium, headless, driven by selenium through
/usr/bin/chromedriver (no driver download), against `make up`'s stack (shared with the README-command
test, tests/e2e/conftest.py).

Before logging in the page answers "Not authenticated". The test logs in through the UI's login form,
opens the page from its navigation entry (the UI shows it in a frame), and checks the figures shown
against the lake's state read here directly from the moto server (DynamoDB, Glue, S3: not through the
health functions). A benchmark_pricing run (the scheduled one that unpausing starts) prices the demo
launches first, so the pricing figures and the comparison chart have data. The page's links open the DAG
(in the whole window) and the run's report (what S3 holds). Screenshots are saved under
$DATAPLATFORM_SCREENSHOTS (default .local/screenshots/); docs/ holds copies for the README.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import boto3
import pytest

from dataplatform.config import settings
from tests.e2e.airflow_api import unpause_after_its_scheduled_run, wait_for
from tests.e2e.up_stack import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = Path(os.environ.get("DATAPLATFORM_SCREENSHOTS", REPO / ".local" / "screenshots"))
PRICING = "benchmark_pricing"
OPEN_GDPR = ("PENDING", "IN_PROGRESS", "FAILED")


@pytest.fixture(scope="module")
def browser():
    if not (shutil.which("chromium") and Path(CHROMEDRIVER).exists()):
        pytest.fail("no Chromium: apt-get install -y chromium chromium-driver (.ci/run does it)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def aws_client(moto_url: str, service: str):
    return boto3.client(
        service,
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def scan(dynamodb, table: str) -> list[dict]:
    from dataplatform.dynamodb import from_item

    pages = dynamodb.get_paginator("scan").paginate(TableName=table)
    return [from_item(item) for page in pages for item in page["Items"]]


def lake_state(moto_url: str) -> dict:
    """The figures the page must show, read from the moto server directly."""
    config = settings()
    dynamodb, glue, s3 = (aws_client(moto_url, service) for service in ("dynamodb", "glue", "s3"))
    now = datetime.now(UTC)
    requests = scan(dynamodb, config.gdpr.requests_table)
    open_requests = [r for r in requests if r["status"] in OPEN_GDPR]
    state: dict = {
        "gdpr.open": len(open_requests),
        "gdpr.overdue": sum(datetime.fromisoformat(r["deadline"]) < now for r in open_requests),
    }
    ledger = config.reconciliation.ledger_table
    if ledger in dynamodb.list_tables()["TableNames"]:
        state["reconciliation.backlog"] = sum(
            item.get("state_key") == "batch#PENDING" for item in scan(dynamodb, ledger)
        )
    for name, table in config.glue.tables.items():
        pages = glue.get_paginator("get_partitions").paginate(
            DatabaseName=table.database, TableName=table.table
        )
        values = [tuple(p["Values"]) for page in pages for p in page["Partitions"]]
        state[f"glue.{name}.newest_partition"] = " / ".join(max(values)) if values else "—"
    for name, table in config.iceberg.tables.items():
        location = glue.get_table(DatabaseName=table.database, Name=table.table)["Table"]["Parameters"][
            "metadata_location"
        ]
        bucket, _, key = location.removeprefix("s3://").partition("/")
        metadata = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        state[f"iceberg.{name}.snapshots"] = str(len(metadata.get("snapshots") or []))
    week_ago = (now - timedelta(days=7)).isoformat()
    priced = [
        launch
        for launch in scan(dynamodb, config.pricing.launches_table)
        if launch["status"] == "COMPLETE"
        and launch.get("total_cost") not in (None, "")
        and not launch.get("pricing_error")
        and launch.get("completed_at", "") >= week_ago
    ]
    state["pricing.launches_priced"] = len(priced)
    state["pricing.bars"] = {
        (launch["workflow_type"], "+".join(sorted({t.split(".")[0] for t in launch["instance_types"]})))
        for launch in priced
    }
    return state


def run_report_objects(moto_url: str, dag_id: str, run_id: str) -> list[dict]:
    from dataplatform.reports import report_key

    bucket, _, prefix = settings().reports_uri.removeprefix("s3://").partition("/")
    folder = prefix + report_key(dag_id, run_id, "x").rsplit("/", 1)[0] + "/"
    s3 = aws_client(moto_url, "s3")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=folder).get("Contents", []))
    return [
        json.loads(s3.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in keys if k.endswith(".json")
    ]


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def shown(driver, selector: str) -> str:
    (element,) = css(driver, selector)
    return element.text.strip()


def screenshot(driver, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    driver.save_screenshot(str(path))
    return path


def test_the_lake_health_page_after_the_ui_login_shows_the_lakes_figures(running_up_stack, browser):
    from selenium.webdriver.common.by import By

    stack = running_up_stack
    airflow = stack.airflow_client()
    base = airflow.url.rstrip("/")

    # A pricing run (the scheduled one unpausing starts), then paused again: nothing changes the lake
    # between the state read here and the page.
    unpause_after_its_scheduled_run(airflow, PRICING)
    airflow.api("PATCH", f"/dags/{PRICING}", json={"is_paused": True})
    expected = lake_state(f"http://127.0.0.1:{stack.moto_port}")
    assert expected["pricing.launches_priced"] > 0, "the pricing run priced the demo launches"

    # Not logged in: the page refuses (Airflow's auth, not the UI's redirect).
    browser.get(f"{base}/lake-health/")
    assert "Not authenticated" in browser.find_element(By.TAG_NAME, "body").text

    # The UI's login form.
    browser.get(f"{base}/")
    wait_for(lambda: css(browser, "input[name=username]"), 60, "the login form", 0.5)
    css(browser, "input[name=username]")[0].send_keys(airflow.username)
    css(browser, "input[name=password]")[0].send_keys(airflow.password)
    css(browser, "button[type=submit]")[0].click()

    # The navigation entry opens the page in the UI's frame.
    entry = wait_for(lambda: css(browser, "a[href$='plugin/lake-health']"), 90, "the Lake health entry", 0.5)
    entry[0].click()
    frame = wait_for(lambda: css(browser, "iframe"), 60, "the page's frame", 0.5)[0]
    browser.switch_to.frame(frame)
    wait_for(lambda: len(css(browser, "[data-pipeline]")) == 5, 60, "the five pipelines", 0.5)

    seen = {
        "gdpr.open": int(shown(browser, "[data-figure='gdpr.open'] > td")),
        "gdpr.overdue": int(shown(browser, "[data-figure='gdpr.overdue'] > td")),
        "pricing.launches_priced": int(shown(browser, "[data-figure='pricing.launches_priced'] > td")),
    }
    if "reconciliation.backlog" in expected:
        seen["reconciliation.backlog"] = int(shown(browser, "[data-figure='reconciliation.backlog'] > td"))
    else:  # no stateless run yet: no ledger table, and the page says why it has no figures
        assert shown(browser, "[data-pipeline=reconciliation] [data-state]") == "unknown"
        assert shown(browser, "[data-figure='reconciliation.error'] > td") == (
            f"DynamoDB table {settings().reconciliation.ledger_table} does not exist yet: "
            "the first recon_stateless run (setup_tables) creates it"
        )
    for name in settings().glue.tables:
        seen[f"glue.{name}.newest_partition"] = shown(
            browser, f"[data-pipeline=glue] tr[data-row='{name}'] > td[data-column=newest_partition]"
        )
    for name in settings().iceberg.tables:
        seen[f"iceberg.{name}.snapshots"] = shown(
            browser, f"[data-pipeline=iceberg] tr[data-row='{name}'] > td[data-column=snapshots]"
        )
    labels = [bar.get_attribute("data-bar") for bar in css(browser, "[data-chart=pricing] g[data-bar]")]
    seen["pricing.bars"] = {tuple(label.split(" · ", 1)) for label in labels}
    assert len(labels) == len(seen["pricing.bars"])
    assert seen == expected
    browser.switch_to.default_content()
    screenshot(browser, "lake-health-in-airflow.png")

    # The page alone (the login's cookie authenticates it), whole: its report link shows what S3 holds.
    browser.get(f"{base}/lake-health/")
    # The window as tall as the page (its frame's height added: the viewport is the window minus it).
    height = browser.execute_script(
        "return document.documentElement.scrollHeight + window.outerHeight - window.innerHeight"
    )
    browser.set_window_size(1400, height)
    screenshot(browser, "lake-health-page.png")
    browser.set_window_size(1400, 1000)
    (report_link,) = css(browser, f"[data-dag='{PRICING}'] a[data-link=report]")
    run_id = report_link.get_attribute("data-run-id")
    report_link.click()
    wait_for(lambda: css(browser, "section[data-report] pre"), 30, "the run's reports", 0.5)
    reports = [json.loads(pre.text) for pre in css(browser, "section[data-report] pre")]
    assert reports and reports == run_report_objects(f"http://127.0.0.1:{stack.moto_port}", PRICING, run_id)

    # The DAG link leaves the page for Airflow's DAG view (under the same base URL).
    browser.get(f"{base}/lake-health/")
    css(browser, f"[data-dag='{PRICING}'] a[data-link=dag]")[0].click()
    wait_for(lambda: urlparse(browser.current_url).path == f"/dags/{PRICING}", 30, "the DAG page", 0.5)

"""The lake-health page's HTML (``dataplatform.ui``): values from data are escaped, every URL is relative
(so the page works behind a path prefix), the pricing comparison is an inline SVG chart."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlparse

import pytest

from dataplatform.ui import chart, page, views

pytestmark = pytest.mark.unit

HOSTILE = "<script>alert('x')</script>&\"'"


def block(pipeline: str, dag_ids: list[str], figures: dict, **extra) -> dict:
    """One pipeline block as ``dataplatform.health.figures`` returns it."""
    return {
        "pipeline": pipeline,
        "title": pipeline.title(),
        "dag_ids": dag_ids,
        "state": "ok",
        "error": None,
        "last_runs": [],
        "figures": figures,
        "findings": [],
        **extra,
    }


FIGURES = {
    "generated_at": "2026-12-05T15:00:00+00:00",
    "env": "local",
    "state": "warning",
    "findings": [],
    "pipelines": [
        block(
            "reconciliation",
            ["recon_stateless", "recon_stateful"],
            {
                "backlog": 3,
                "latest_complete_window": ["2026-12-05T13:00:00+00:00", "2026-12-05T14:00:00+00:00"],
                "complete_through": "2026-12-05T14:00:00+00:00",
                "incomplete_windows": 1,
                "invalid_batches": 0,
                "status": {"ignored": True},
            },
            last_runs=[{"dag_id": "recon_stateless", "run_id": f"manual__{HOSTILE}"}],
        ),
        block(
            "gdpr",
            ["gdpr_erasure"],
            {
                "open": 4,
                "overdue": 1,
                "due_soon": 2,
                "completed_this_month": 7,
                "urgent": [
                    {
                        "request_id": HOSTILE,
                        "status": "FAILED",
                        "deadline": "2026-12-01",
                        "days_left": -4.0,
                        "overdue": True,
                    }
                ],
            },
            state="failing",
            findings=[{"severity": "failing", "summary": f"1 request overdue {HOSTILE}"}],
        ),
        block("glue", ["glue_partition_loader"], {}, state="unknown", error=f"AccessDenied: {HOSTILE}"),
        block(
            "pricing",
            ["benchmark_pricing"],
            {
                "week": {"launches_priced": 12, "cost_usd": "40.50", "unpriced": 1, "pricing_errors": 0},
                "comparison": {
                    "period": {"start": "2026-11-05T00:00:00+00:00", "end": "2026-12-05T00:00:00+00:00"},
                    "groups": [
                        {"workflow_type": "rnaseq", "group": "m6g", "cost_per_run_usd": "2.00"},
                        {"workflow_type": HOSTILE, "group": "m5", "cost_per_run_usd": "4.00"},
                    ],
                },
                "repeatedly_failed": [],
            },
        ),
    ],
}
RUNS = {"recon_stateless": page.LatestRun("scheduled__2026-12-05T14:00:00+00:00", "success")}


class Links(HTMLParser):
    """Every URL attribute and every element name of a page."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.urls += [value for name, value in attrs if name in ("href", "src", "action") and value]


@pytest.fixture(scope="module")
def html() -> str:
    return page.render_page(views.pipeline_views(FIGURES, RUNS), generated_at=FIGURES["generated_at"])


def parsed(text: str) -> Links:
    links = Links()
    links.feed(text)
    return links


def test_values_from_data_are_escaped(html):
    assert "<script" not in html and "script" not in parsed(html).tags
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&#34;&#39;" in html


def test_every_url_is_relative_and_stays_under_the_path_prefix(html):
    urls = parsed(html).urls
    assert urls
    page_url = "https://airflow.example.com/team-a/airflow/lake-health/"
    for url in urls:
        assert not urlparse(url).scheme and not url.startswith("/"), url
        assert urljoin(page_url, url).startswith("https://airflow.example.com/team-a/airflow/"), url
    assert "https://airflow.example.com/team-a/airflow/dags/recon_stateless" in {
        urljoin(page_url, url) for url in urls
    }


def test_each_dag_links_to_its_latest_run_and_its_newest_report(html):
    urls = parsed(html).urls
    assert "../dags/recon_stateless/runs/scheduled__2026-12-05T14%3A00%3A00%2B00%3A00" in urls
    (report,) = [url for url in urls if url.startswith("report?")]
    assert parse_qs(urlparse(report).query) == {
        "dag_id": ["recon_stateless"],
        "run_id": [f"manual__{HOSTILE}"],
    }
    assert "../dags/recon_stateful" in urls and "../dags/gdpr_erasure" in urls


def test_the_pricing_comparison_is_an_inline_svg_chart_with_a_bar_per_group(html):
    assert html.count("<svg") == 1
    svg = html[html.index("<svg") : html.index("</svg>")]
    assert svg.count("<rect") == 2
    assert f'width="{chart.PLOT_WIDTH}"' in svg  # the largest value spans the plot
    assert f'width="{chart.PLOT_WIDTH // 2}"' in svg
    assert "rnaseq · m6g" in svg and ">2.00<" in svg and ">4.00<" in svg  # as the data spells the money


def test_headline_figures_tables_findings_and_errors_are_shown(html):
    assert (
        'data-figure="reconciliation.backlog"><th>Backlog</th><td class="number" data-column="">3</td>'
        in html
    )
    assert "2026-12-05T13:00:00+00:00 / 2026-12-05T14:00:00+00:00" in html
    assert "ignored" not in html  # the CLI's full status is not repeated on the page
    assert 'data-figure="gdpr.completed_this_month"' in html
    assert "failing: 1 request overdue &lt;script&gt;" in html
    assert "AccessDenied: &lt;script&gt;" in html
    assert (
        'data-figure="pricing.launches_priced"><th>Launches priced</th><td class="number" data-column="">12</td>'
        in html
    )


def test_reports_view_escapes_the_report():
    html = page.render_reports("gdpr_erasure", HOSTILE, [{"summary": HOSTILE}])
    assert "<script" not in html
    assert parsed(html).urls == ["./", "../dags/gdpr_erasure"]

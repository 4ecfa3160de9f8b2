"""The run report: filled from the shared end-to-end run, numbers equal to the tables, skipped
sections that say why, and the file opened in a real browser (headless Chromium)."""

from __future__ import annotations

import io
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from services import apt_install

from conftest import ExampleRun
from crm_spark.report import Report, Section, Table, number, render
from crm_spark.stages.report import ReportOutcome

SECTIONS = ("overview", "customers", "segment", "basket", "churn", "recommend", "clv")
SCREENSHOT_ENV = "CRM_SPARK_REPORT_SCREENSHOT"  # where the browser test also copies its screenshot


# -- rendering, no Spark ---------------------------------------------------------------------------
def test_a_skipped_section_says_why_and_text_is_escaped() -> None:
    report = Report(title="t", as_of="2025-06-30", generated="now", lake="lake", sections=[
        Section("basket", "Basket", skipped="gold.basket_rules not found: run `crm-spark basket`"),
        Section("overview", "Overview", facts=[("rows", "<b>1</b>")],
                tables=[Table("T", ("a", "n"), (("x", "1,234"),), numeric=(False, True))]),
    ])

    html = render(report)

    assert re.search(r'<section id="basket"[^>]*>\s*<h2>Basket</h2>\s*<p class="skipped-reason">'
                     r"<strong>Not in this report:</strong> gold.basket_rules not found", html)
    assert "&lt;b&gt;1&lt;/b&gt;" in html and "<b>1</b>" not in html
    assert '<td class="num">1,234</td>' in html


def test_numbers_are_written_for_people() -> None:
    assert [number(v) for v in (1234567, 1234.5, 12.345, 0.12345, None, float("nan"))] == [
        "1,234,567", "1,234", "12.35", "0.123", "-", "-"]


# -- the shared end-to-end run ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def outcome(e2e) -> ReportOutcome:
    result = e2e.results["report"]
    assert result.skipped is None
    return result.outcome


@pytest.mark.slow
def test_every_section_is_filled_and_the_file_stands_alone(e2e, outcome: ReportOutcome) -> None:
    assert outcome.sections == {key: None for key in SECTIONS}
    path = Path(outcome.path)
    assert path.is_file() and path.parent == Path(e2e.settings.paths.lake) / "_reports"
    assert path.name.startswith(f"report-{outcome.as_of.isoformat()}-")
    html = path.read_text(encoding="utf-8")
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) >= 18 and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r'(src|href)="(https?:)?//', html), "the report must open without a network"
    for key in SECTIONS:
        assert f'<section id="{key}"' in html


@pytest.mark.slow
def test_the_numbers_shown_equal_the_tables(spark: SparkSession, e2e, outcome: ReportOutcome) -> None:
    lake, as_of = e2e.lake, outcome.as_of
    # quarantine per table and per reason, counted here from the rows themselves
    tables = [t for t in outcome.quarantine_by_table if lake.exists(t)]
    assert tables and {t: lake.read(t).count() for t in tables} == outcome.quarantine_by_table
    reasons: Counter[str] = Counter()
    for t in tables:
        for row in lake.read(t).select("_dq_reasons").collect():
            reasons.update(row["_dq_reasons"] or ["(none recorded)"])
    assert dict(reasons) == outcome.quarantine_by_reason
    facts = outcome.facts
    features = lake.read("gold.customer_features").where(F.col("as_of_date") == as_of)
    assert facts["customers"]["customers"] == f"{features.count():,}"
    assert facts["customers"]["with an order"] == f"{features.where('has_orders').count():,}"
    scores = lake.read("gold.churn_scores").where(F.col("as_of_date") == as_of)
    assert facts["churn"]["customers scored"] == f"{scores.count():,}"
    for band in ("high", "medium", "low"):
        assert facts["churn"][f"{band} risk"] == f"{scores.where(F.col('risk_band') == band).count():,}"
    recs = lake.read("gold.recommendations").where(F.col("as_of_date") == as_of)
    assert facts["recommend"]["customers with recommendations"] == f"{recs.select('customer_id').distinct().count():,}"
    segment = e2e.results["segment"].metrics
    assert facts["segment"]["segments (k)"] == f"{int(segment['k']):,}"
    assert facts["basket"]["rules"] == f"{int(e2e.results['basket'].metrics['rules']):,}"


@pytest.mark.slow
def test_the_run_summary_ends_with_quarantine_by_reason_and_the_report_path(e2e, outcome: ReportOutcome) -> None:
    from crm_spark.cli import _summary

    out = io.StringIO()
    _summary(out, list(e2e.results.values()), 1.0, pending=())

    lines = out.getvalue().splitlines()
    assert lines[-1] == f"Report: {outcome.path}"
    total = re.search(r"quarantine: ([\d,]+) rows in all", out.getvalue())
    assert total and int(total.group(1).replace(",", "")) == sum(outcome.quarantine_by_table.values())
    shown = re.search(r"quarantine by reason: (.*)", out.getvalue()).group(1)
    top = sorted(outcome.quarantine_by_reason.items(), key=lambda kv: -kv[1])[:10]
    assert shown.startswith(", ".join(f"{reason} {rows:,}" for reason, rows in top))


# -- a lake with only a basket list: the stages that cannot run are skipped, and the report says so ---
@pytest.mark.slow
def test_a_run_with_skipped_stages_still_reports_why(baskets_example: ExampleRun) -> None:
    results = baskets_example.results  # every stage on the basket-list example (conftest)
    skipped = {name: r.skipped for name, r in results.items() if r.skipped}
    assert {"segment", "churn"} <= set(skipped), skipped
    report = results["report"].outcome
    assert report.sections["basket"] is None and report.sections["overview"] is None
    html = Path(report.path).read_text(encoding="utf-8")
    for key in ("customers", "segment", "churn", "recommend", "clv"):
        stage = {"customers": "features"}.get(key, key)
        if stage in skipped:  # the runner's reason, word for word, in a section that says it is empty
            assert skipped[stage] in (report.sections[key] or ""), key
            assert re.search(rf'<section id="{key}"[^>]*>\s*<h2>[^<]*</h2>\s*<p class="intro">[^<]*</p>\s*'
                             rf'<p class="skipped-reason"><strong>Not in this report:</strong>', html), key
        elif results[stage].rows == 0:  # it ran and wrote nothing (a basket list has one anonymous customer)
            assert "has no rows as of" in (report.sections[key] or ""), key
        else:
            assert report.sections[key] is None, (key, report.sections[key])


# -- a real browser --------------------------------------------------------------------------------
def _chromium() -> tuple[str, str]:
    """Debian's chromium and chromedriver, installed with apt-get when missing (root, as on CI)."""
    apt_install(["chromium", "chromium-driver"], present=lambda: bool(shutil.which("chromium") and shutil.which("chromedriver")))
    return shutil.which("chromium") or "", shutil.which("chromedriver") or ""


@pytest.mark.slow
@pytest.mark.browser
def test_the_report_opens_in_chromium_with_every_figure_loaded(outcome: ReportOutcome, tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.get(Path(outcome.path).resolve().as_uri())
        driver.execute_async_script(  # every image decoded (or failed) before looking
            "const done = arguments[arguments.length - 1];"
            "Promise.all([...document.images].map(i => i.decode().catch(() => null))).then(() => done(true));")
        images = driver.execute_script(
            "return [...document.images].map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]);")
        assert len(images) >= 18
        broken = [alt for alt, complete, width, height in images if not (complete and width > 0 and height > 0)]
        assert not broken, f"figures that did not load: {broken}"
        sections = driver.execute_script(
            "return [...document.querySelectorAll('section.report-section')].map(s => "
            "[s.id, s.querySelectorAll('dl.facts div, table tbody tr, figure img, p.skipped-reason').length, "
            "s.innerText.trim().length]);")
        assert [s[0] for s in sections] == list(SECTIONS)
        empty = [key for key, items, text in sections if items == 0 or text < 40]
        assert not empty, f"sections with nothing in them: {empty}"
        if os.environ.get(SCREENSHOT_ENV):  # the whole page, asked for (rendering ~20,000 px costs seconds)
            height = driver.execute_script("return Math.ceil(document.documentElement.scrollHeight);")
            driver.set_window_size(1280, min(int(height) + 200, 30000))
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 50_000
    finally:
        driver.quit()
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(shot, os.environ[SCREENSHOT_ENV])

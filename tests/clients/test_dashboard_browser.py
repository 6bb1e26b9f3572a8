"""The dashboard in a real browser: Debian's headless Chromium, driven by Selenium through Debian's
chromedriver (nothing is downloaded), opens a finished job's page, checks that every plot was drawn (the
class thresholds on the label_quality histogram, the noise-matrix heatmap with its percentages), that the
verdict banner matches the report and that the flagged-rows table is there and sorts, does the same for a
report that is not reliable (flags withheld, reasons, advice, warnings), follows a running job's page as
epochs and warnings arrive, and saves screenshots under tests/artifacts/."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM = os.environ.get("CLEAR_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("CLEAR_TEST_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
# Skip before any fixture starts the service: no browser, no test.
pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason=f"Debian's chromium and chromium-driver are not installed ({CHROMIUM}, {CHROMEDRIVER}): "
           "scripts/test installs them with apt-get")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[test])")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.expected_conditions import staleness_of  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000")
CANVASES = ("chart-loss", "chart-accuracy", "chart-last-pass", "chart-pclean", "chart-noise", "chart-confusion")
# For each canvas: the chart's type and its number of points, as Chart.js holds them.
CHARTS_JS = """return arguments[0].map(id => { const c = Chart.getChart(document.getElementById(id));
  return c ? [id, c.config.type, c.data.datasets.reduce((n, d) => n + d.data.length, 0)] : [id, null, 0]; });"""
# The threshold lines the histogram drew, and its plot area's left and right edges.
THRESHOLDS_JS = """const canvas = document.getElementById("chart-pclean"), area = Chart.getChart(canvas).chartArea;
  return [JSON.parse(canvas.dataset.thresholds || "[]"), area.left, area.right];"""


def _browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager never looks for (or downloads) a browser or driver.
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium session."""
    driver = _browser()
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def full_page_screenshot(driver, path: Path) -> Path:
    """Resize the window to the page's height and save a PNG of all of it."""
    driver.set_window_size(1400, 800)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(max(height, 800), 6000))
    driver.execute_script("window.scrollTo(0, 0)")
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    return path


def sign_in(browser, url: str, next_path: str) -> None:
    """Open ``next_path``, get sent to the login form, type the key in and land on ``next_path``."""
    browser.get(f"{url}{next_path}")
    if "/ui/login" not in browser.current_url:
        return  # the cookie of an earlier test is still there
    browser.find_element(By.ID, "api-key").send_keys(os.environ["CLEARFT_API_KEY"])
    browser.find_element(By.ID, "sign-in").click()
    WebDriverWait(browser, 30).until(lambda d: d.current_url == f"{url}{next_path}")


def check_thresholds(browser, thresholds: dict[str, float]) -> None:
    """Each class's threshold is a line inside the histogram's plot area, left to right by value."""
    lines, left, right = browser.execute_script(THRESHOLDS_JS)
    assert {line["label"]: line["value"] for line in lines} == pytest.approx(thresholds)
    for line in lines:
        assert left <= line["x"] <= right
        assert line["x"] == pytest.approx(left + line["value"] * (right - left), abs=1.0)
    by_value = sorted(lines, key=lambda line: line["value"])
    assert [line["x"] for line in by_value] == sorted(line["x"] for line in lines)
    legend = browser.find_elements(By.CSS_SELECTOR, "#class-thresholds li")
    assert [li.get_attribute("data-label") for li in legend] == list(thresholds)


def check_heatmap(browser, matrix: dict) -> None:
    """One SVG cell per (given, true) pair, rows given and columns true, each printing its share as a
    percentage; the shares add up to 100 %."""
    svg = browser.find_element(By.ID, "noise-matrix-svg")
    assert svg.size["height"] > 100 and svg.size["width"] > 100
    cells = browser.find_elements(By.CSS_SELECTOR, "#noise-matrix-svg g.cell")
    labels, joint = matrix["labels"], matrix["joint"]
    assert len(cells) == len(labels) ** 2
    shown = 0.0
    for k, cell in enumerate(cells):
        i, j = divmod(k, len(labels))
        assert (cell.get_attribute("data-given"), cell.get_attribute("data-true")) == (labels[i], labels[j])
        assert ("diagonal" in cell.get_attribute("class")) == (i == j)
        text = cell.find_element(By.CSS_SELECTOR, "text.value").text
        assert text == f"{100 * joint[i][j]:.1f}%", (i, j, text)
        shown += float(text.rstrip("%"))
    assert shown == pytest.approx(100, abs=0.05 * len(labels) ** 2)


def check_verdict(browser, reliability: dict, withheld: bool) -> None:
    """The banner says the verdict and, when it is not reliable, the reasons and the advice."""
    banner = browser.find_element(By.ID, "verdict")
    assert banner.is_displayed()
    assert banner.get_attribute("data-state") == ("reliable" if reliability["reliable"] else "unreliable")
    title = browser.find_element(By.ID, "verdict-title").text
    if reliability["reliable"]:
        assert title == "reliable"
        return
    assert title == ("not reliable — flags withheld" if withheld
                     else "not reliable — flags kept (clear.flag_when_unreliable)")
    reasons = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#verdict-reasons li")]
    assert reasons == reliability["reasons"]
    assert browser.find_element(By.ID, "verdict-advice").text == f"Try: {reliability['advice']}"


def open_job(browser, url: str, job_id: str) -> dict:
    """Sign in, open the job's page, wait for its charts; returns what each canvas holds."""
    sign_in(browser, url, f"/ui/jobs/{job_id}")
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.body.dataset.chartsReady"))
    return {cid: (kind, points) for cid, kind, points in browser.execute_script(CHARTS_JS, list(CANVASES))}


def test_the_dashboard_of_a_finished_job_draws_its_plots_and_flagged_rows(live_service, finished_job, browser):
    auth = {"Authorization": f"Bearer {os.environ['CLEARFT_API_KEY']}"}
    stats = httpx.get(f"{live_service}/v1/jobs/{finished_job.id}/noise-report/stats", headers=auth).json()
    drawn = open_job(browser, live_service, finished_job.id)
    assert drawn["chart-loss"] == ("line", 6)  # 3 epochs, 2 series
    assert drawn["chart-accuracy"] == ("line", 12) and drawn["chart-last-pass"] == ("line", 9)  # 4 and 3 series
    assert drawn["chart-pclean"] == ("bar", 40) and drawn["chart-noise"] == ("bar", 3)
    assert drawn["chart-confusion"] == ("matrix", 9)
    for canvas in CANVASES:  # drawn with a real size, not collapsed
        assert browser.find_element(By.ID, canvas).size["height"] > 100
    check_thresholds(browser, stats["histogram"]["thresholds"])
    check_heatmap(browser, stats["noise_matrix"])
    check_verdict(browser, stats["reliability"], stats["flags_withheld"])

    rows = browser.find_elements(By.CSS_SELECTOR, "#flagged-table tbody tr")
    assert len(rows) == (min(50, stats["rows"]) if stats["flags_withheld"] else stats["flagged"]) > 0
    first = [float(r.find_element(By.CSS_SELECTOR, "td.quality").text) for r in rows]
    assert first == sorted(first)  # label_quality ascending, likeliest wrong first
    assert rows[0].find_element(By.CSS_SELECTOR, ".label.given").text
    assert rows[0].find_element(By.CSS_SELECTOR, ".label.suggested").text
    assert rows[0].find_element(By.CSS_SELECTOR, "td.text").get_attribute("title")
    assert rows[0].find_element(By.CSS_SELECTOR, "td.reason").text.startswith(
        ("flag withheld", "the passes' mean") if stats["flags_withheld"] else "the passes' mean probabilities favour")
    assert rows[0].find_element(By.CSS_SELECTOR, "span.split").text in ("train", "validation")
    header = browser.find_element(By.XPATH, "//table[@id='flagged-table']//th[text()='label_quality']")
    header.click()  # the table came sorted ascending: one click sorts it descending
    again = [float(r.find_element(By.CSS_SELECTOR, "td.quality").text)
             for r in browser.find_elements(By.CSS_SELECTOR, "#flagged-table tbody tr")]
    assert again == sorted(first, reverse=True)
    epochs = browser.find_elements(By.CSS_SELECTOR, "#epoch-table tbody tr")
    titles = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#epoch-table th")]
    assert len(epochs) == 3 and "last pass p_clean mean" in titles

    adapter = browser.find_element(By.ID, "download-adapter").get_attribute("href")
    assert adapter.endswith(f"/v1/jobs/{finished_job.id}/adapter")
    assert httpx.get(adapter).status_code == 401  # a key is needed: the browser's cookie, or the header
    assert httpx.get(adapter, headers=auth).status_code == 200
    cookie = browser.get_cookie("clear_api_key")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    shot = full_page_screenshot(browser, ARTIFACTS / f"dashboard-{finished_job.id}.png")
    assert shot.stat().st_size > 20_000


def test_a_report_that_is_not_reliable_shows_why_and_its_warnings(live_service, unreliable_job, browser):
    from tests.clients import fake_report

    drawn = open_job(browser, live_service, unreliable_job)
    assert drawn["chart-pclean"] == ("bar", 40) and drawn["chart-last-pass"] == ("line", 6)
    report = fake_report.summary(reliable=False)
    check_verdict(browser, report["reliability"], withheld=True)
    check_thresholds(browser, report["class_thresholds"])
    check_heatmap(browser, report["noise_matrix"])
    warnings = browser.find_element(By.ID, "warnings")
    assert warnings.is_displayed() and warnings.location["y"] < browser.find_element(By.ID, "verdict").location["y"]
    items = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#warning-list li")]
    assert len(items) == 2 and items[0].startswith("after warm-up: the model has not learned the task after warm-up")
    assert items[1].startswith("end of training: ")
    assert browser.find_element(By.CSS_SELECTOR, "#flagged h2").text.startswith("Rows with the lowest label_quality")
    reasons = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#flagged-table td.reason")]
    assert len(reasons) == 50 and any(r.startswith("flag withheld (the report is not reliable): ") for r in reasons)
    full_page_screenshot(browser, ARTIFACTS / "dashboard-not-reliable.png")


def test_a_running_jobs_page_adds_epochs_and_warnings_as_they_come(live_service, live_database, model_dir,
                                                                  tmp_path, browser):
    from app.db import session_factory
    from app.services.transitions import add_event, transition
    from tests.clients import fake_report
    from tests.clients.conftest import unqueued_job
    from tests.service.helpers import toy_frame

    job_id = unqueued_job(live_service, live_database, model_dir, tmp_path, toy_frame(30))
    open_job(browser, live_service, job_id)
    assert not browser.find_element(By.ID, "warnings").is_displayed()
    with session_factory(live_database)() as session:
        transition(session, job_id, ("queued",), "running")
        add_event(session, job_id, "epoch", message="epoch 1 of 2", data=fake_report.EPOCHS[1])
        add_event(session, job_id, "warning", message=fake_report.WARNING, data={"stage": "after_warmup"})
        session.commit()
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "warnings").is_displayed()
                                     and d.find_elements(By.CSS_SELECTOR, "#epoch-table tbody tr"))
    assert [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#warning-list li")] == [
        f"after warm-up: {fake_report.WARNING}"]
    titles = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#epoch-table th")]
    cells = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#epoch-table tbody td")]
    assert cells[titles.index("last pass p_clean mean")] == "0.620" and cells[:2] == ["2", "routed"]
    assert browser.execute_script(CHARTS_JS, ["chart-last-pass"])[0][1:] == ["line", 3]
    before = browser.find_element(By.TAG_NAME, "body")
    with session_factory(live_database)() as session:
        transition(session, job_id, ("running",), "cancelled")
    WebDriverWait(browser, 30).until(staleness_of(before))  # the stream ended: the page reloaded
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.body.dataset.chartsReady"))
    assert browser.find_element(By.ID, "job-status").text == "cancelled"
    assert browser.find_element(By.ID, "warnings").is_displayed()  # now rendered from the event log


def test_the_job_list_links_to_the_job(live_service, finished_job, browser):
    sign_in(browser, live_service, "/ui")
    link = browser.find_element(By.CSS_SELECTOR, f"a[href='/ui/jobs/{finished_job.id}']")
    row = link.find_element(By.XPATH, "./ancestor::tr")
    assert "succeeded" in row.find_element(By.CSS_SELECTOR, ".state").text
    full_page_screenshot(browser, ARTIFACTS / "jobs.png")

"""The dashboard in a real browser: Debian's headless Chromium, driven by Selenium through Debian's
chromedriver (nothing is downloaded), opens a finished job's page, checks that every plot was drawn
and that the flagged-rows table is there and sorts, and saves a screenshot under tests/artifacts/."""

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
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000")
CANVASES = ("chart-loss", "chart-accuracy", "chart-pclean", "chart-noise", "chart-confusion")
# For each canvas: the chart's type and its number of points, as Chart.js holds them.
CHARTS_JS = """return arguments[0].map(id => { const c = Chart.getChart(document.getElementById(id));
  return c ? [id, c.config.type, c.data.datasets.reduce((n, d) => n + d.data.length, 0)] : [id, null, 0]; });"""


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
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{url}{next_path}")
    if "/ui/login" not in browser.current_url:
        return  # the cookie of an earlier test is still there
    browser.find_element(By.ID, "api-key").send_keys(os.environ["CLEARFT_API_KEY"])
    browser.find_element(By.ID, "sign-in").click()
    WebDriverWait(browser, 30).until(lambda d: d.current_url == f"{url}{next_path}")


def test_the_dashboard_of_a_finished_job_draws_its_plots_and_flagged_rows(live_service, finished_job, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    auth = {"Authorization": f"Bearer {os.environ['CLEARFT_API_KEY']}"}
    stats = httpx.get(f"{live_service}/v1/jobs/{finished_job.id}/noise-report/stats", headers=auth).json()
    assert stats["flagged"] > 0
    sign_in(browser, live_service, f"/ui/jobs/{finished_job.id}")
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.body.dataset.chartsReady"))
    drawn = {cid: (kind, points) for cid, kind, points in browser.execute_script(CHARTS_JS, list(CANVASES))}
    assert drawn["chart-loss"] == ("line", 6) and drawn["chart-accuracy"] == ("line", 6)  # 3 epochs, 2 series
    assert drawn["chart-pclean"] == ("bar", 40) and drawn["chart-noise"] == ("bar", 3)
    assert drawn["chart-confusion"] == ("matrix", 9)
    for canvas in CANVASES:  # drawn with a real size, not collapsed
        assert browser.find_element(By.ID, canvas).size["height"] > 100

    rows = browser.find_elements(By.CSS_SELECTOR, "#flagged-table tbody tr")
    assert len(rows) == stats["flagged"]
    first = [float(r.find_elements(By.TAG_NAME, "td")[-1].text) for r in rows]
    assert first == sorted(first)  # label_quality ascending, likeliest wrong first
    assert rows[0].find_element(By.CSS_SELECTOR, ".label.given").text
    assert rows[0].find_element(By.CSS_SELECTOR, ".label.suggested").text
    assert rows[0].find_element(By.CSS_SELECTOR, "td.text").get_attribute("title")
    header = browser.find_element(By.XPATH, "//table[@id='flagged-table']//th[text()='label_quality']")
    header.click()  # the table came sorted ascending: one click sorts it descending
    again = [float(r.find_elements(By.TAG_NAME, "td")[-1].text)
             for r in browser.find_elements(By.CSS_SELECTOR, "#flagged-table tbody tr")]
    assert again == sorted(first, reverse=True)

    adapter = browser.find_element(By.ID, "download-adapter").get_attribute("href")
    assert adapter.endswith(f"/v1/jobs/{finished_job.id}/adapter")
    assert httpx.get(adapter).status_code == 401  # a key is needed: the browser's cookie, or the header
    assert httpx.get(adapter, headers=auth).status_code == 200
    cookie = browser.get_cookie("clear_api_key")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    shot = full_page_screenshot(browser, ARTIFACTS / f"dashboard-{finished_job.id}.png")
    assert shot.stat().st_size > 20_000


def test_the_job_list_links_to_the_job(live_service, finished_job, browser):
    from selenium.webdriver.common.by import By

    sign_in(browser, live_service, "/ui")
    link = browser.find_element(By.CSS_SELECTOR, f"a[href='/ui/jobs/{finished_job.id}']")
    row = link.find_element(By.XPATH, "./ancestor::tr")
    assert "succeeded" in row.find_element(By.CSS_SELECTOR, ".state").text
    full_page_screenshot(browser, ARTIFACTS / "jobs.png")

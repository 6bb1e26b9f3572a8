"""Save a full-page PNG of a job's dashboard page, as drawn by Debian's headless Chromium (how
docs/dashboard.png was made). Usage: python scripts/dashboard_screenshot.py URL JOB_ID OUT.png [WIDTH]"""

from __future__ import annotations

import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars")


def main(url: str, job_id: str, out: str, width: int = 1400, max_height: int = 2200) -> None:
    """Open ``url/ui/jobs/job_id``, wait for its charts, and save the page (up to ``max_height`` px) to ``out``."""
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in FLAGS + (f"--window-size={width},900",):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    try:
        driver.get(f"{url.rstrip('/')}/ui/jobs/{job_id}")
        WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.body.dataset.chartsReady"))
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, min(height, max_height))
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(out)
    finally:
        driver.quit()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], *(int(a) for a in sys.argv[4:]))

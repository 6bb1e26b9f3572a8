"""The review screen in a real browser (Debian's headless Chromium through Debian's chromedriver, as in
test_dashboard_browser.py): on a finished job's page (its report written straight to the live service's
Postgres database, no training), page and filter the report table, tick two flagged rows and accept their
suggestions, relabel a third, see an API error shown in the page, reload and find the decisions still there,
publish a version and check through the API that exactly those three labels changed, then retrain on it and
check the new job was made from this one. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import json
import os
import time

import httpx
import pytest

from tests.clients.test_dashboard_browser import (  # noqa: F401  (the skip rules and the browser fixture)
    ARTIFACTS, browser, pytestmark, sign_in)

from selenium.webdriver.common.by import By  # noqa: E402  (importable: the import above skips without it)
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

WAIT_S = 30


def screenshot(driver, name: str) -> None:
    """Save a PNG of the whole page (the window made taller than the page, so nothing at its foot is cut off)
    as tests/artifacts/``name``."""
    driver.set_window_size(1400, 800)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(height + 200, 8000))
    driver.execute_script("window.scrollTo(0, 0)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / name))


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {os.environ['CLEARFT_API_KEY']}"}


@pytest.fixture(scope="module")
def review_job(live_service, live_database, model_dir, tmp_path_factory):  # noqa: F811
    """A job of tenant ``clients`` on 60 toy rows, finished with a fabricated reliable report (every fourth row
    flagged, its suggestion another class than the given one); returns (job id, the report rows)."""
    from tests.clients import fake_report
    from tests.clients.conftest import unqueued_job
    from tests.service.helpers import toy_frame

    frame = toy_frame(60)
    job_id = unqueued_job(live_service, live_database, model_dir, tmp_path_factory.mktemp("review"), frame)
    rows, _ = fake_report.finish_job(live_database, job_id, "clients", [str(v) for v in frame["label"]],
                                     reliable=True)
    return job_id, rows


def row_indices(browser) -> list[int]:
    """The row_index of each row the table shows, top to bottom."""
    boxes = browser.find_elements(By.CSS_SELECTOR, "#flagged-table input.row-pick")
    return [int(box.get_attribute("value")) for box in boxes]


def decision(browser, row_index: int) -> str:
    """The decision cell of the table's row ``row_index``."""
    return browser.find_element(By.XPATH, f"//table[@id='flagged-table']//input[@value='{row_index}']"
                                          "/ancestor::tr/td[contains(@class, 'decision')]").text


def tick(browser, *indices: int) -> None:
    """Tick the checkboxes of rows ``indices`` (and no other)."""
    for box in browser.find_elements(By.CSS_SELECTOR, "#flagged-table input.row-pick"):
        if box.is_selected() != (int(box.get_attribute("value")) in indices):
            box.click()


def loaded(browser, before: str):
    """A wait condition: the table was read again from the API since it had ``before`` loads, and is idle."""
    return lambda d: (d.find_element(By.ID, "flagged-table").get_attribute("data-loads") or "0") != before and \
        d.find_element(By.ID, "flagged-table").get_attribute("data-state") == "ready"


def loads(browser) -> str:
    """How many times the table was read from the API so far."""
    return browser.find_element(By.ID, "flagged-table").get_attribute("data-loads") or "0"


def choose(browser, element_id: str, value: str) -> None:
    """Pick ``value`` in the filter ``element_id`` and wait for the table to be read again."""
    before = loads(browser)
    Select(browser.find_element(By.ID, element_id)).select_by_value(value)
    WebDriverWait(browser, WAIT_S).until(loaded(browser, before))


def search(browser, text: str) -> None:
    """Put ``text`` in the search box at once (no typing: no half-typed searches), press the Filter button and
    wait for the table."""
    before = loads(browser)
    browser.execute_script("arguments[0].value = arguments[1]", browser.find_element(By.ID, "filter-q"), text)
    browser.find_element(By.ID, "filter-apply").click()
    WebDriverWait(browser, WAIT_S).until(loaded(browser, before))


def wait_final(url: str, job_id: str, timeout: float = 120) -> dict:
    """The job once it is final (polled through the API)."""
    deadline = time.monotonic() + timeout
    while True:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", headers=_auth(), timeout=30).json()
        if job["status"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            return job
        time.sleep(0.5)


def open_review(browser, url: str, job_id: str) -> None:
    """Sign in, open the job's page and wait for its review script."""
    sign_in(browser, url, f"/ui/jobs/{job_id}")
    WebDriverWait(browser, WAIT_S).until(lambda d: d.execute_script("return document.body.dataset.reviewReady"))


def api_rows(url: str, dataset_id: str) -> list[dict]:
    """A dataset's rows through the API (JSON lines), in row_index order."""
    answer = httpx.get(f"{url}/v1/datasets/{dataset_id}/rows.jsonl", headers=_auth(), timeout=30)
    assert answer.status_code == 200, answer.text
    return [json.loads(line) for line in answer.text.splitlines()]


def test_review_accept_relabel_publish_and_retrain_in_the_browser(live_service, review_job, browser):  # noqa: F811
    job_id, report = review_job
    flagged = [r["row_index"] for r in sorted(report, key=lambda r: r["rank"]) if r["flagged"]]
    by_index = {r["row_index"]: r for r in report}
    open_review(browser, live_service, job_id)
    assert row_indices(browser) == flagged  # flagged rows by default, likeliest wrong first
    assert browser.find_element(By.ID, "page-info").text == f"rows 1–{len(flagged)} of {len(flagged)}"
    assert not browser.find_element(By.ID, "accept-selected").is_enabled()  # nothing ticked yet

    # paging: every row is 50 + 10
    choose(browser, "filter-flagged", "")
    assert len(row_indices(browser)) == 50 and browser.find_element(By.ID, "page-info").text == "rows 1–50 of 60"
    before = loads(browser)
    browser.find_element(By.ID, "page-next").click()
    WebDriverWait(browser, WAIT_S).until(loaded(browser, before))
    assert len(row_indices(browser)) == 10 and browser.find_element(By.ID, "page-info").text == "rows 51–60 of 60"
    assert not browser.find_element(By.ID, "page-next").is_enabled()
    before = loads(browser)
    browser.find_element(By.ID, "page-prev").click()
    WebDriverWait(browser, WAIT_S).until(loaded(browser, before))
    assert row_indices(browser)[:len(flagged)] == flagged
    # the given / suggested label filters and the text search (server-side, case-insensitive)
    choose(browser, "filter-suggested", "2")
    assert row_indices(browser) and all(by_index[i]["suggested_label"] == "2" for i in row_indices(browser))
    choose(browser, "filter-suggested", "")
    choose(browser, "filter-given", "0")
    assert row_indices(browser) and all(by_index[i]["given_label"] == "0" for i in row_indices(browser))
    choose(browser, "filter-given", "")
    word = browser.find_element(By.CSS_SELECTOR, "#flagged-table td.text").get_attribute("title").split()[0]
    search(browser, word.upper())
    shown = browser.find_elements(By.CSS_SELECTOR, "#flagged-table td.text")
    assert shown and all(word in td.get_attribute("title").lower() for td in shown)
    assert len(shown) < 50
    search(browser, "")
    choose(browser, "filter-flagged", "true")
    assert row_indices(browser) == flagged

    # accept the suggestions of the first two flagged rows, relabel the third to the class neither label has
    first, second, third = flagged[:3]
    tick(browser, first, second)
    assert browser.find_element(By.ID, "selected-count").text == "2 rows selected"
    before = loads(browser)
    browser.find_element(By.ID, "accept-selected").click()
    WebDriverWait(browser, WAIT_S).until(loaded(browser, before))
    assert decision(browser, first) == f"accept → {by_index[first]['suggested_label']}"
    assert decision(browser, second) == f"accept → {by_index[second]['suggested_label']}"
    assert "recorded 2 decisions (accept 2)" in browser.find_element(By.ID, "review-status").text
    other = ({"0", "1", "2"} - {by_index[third]["given_label"], by_index[third]["suggested_label"]}).pop()
    tick(browser, third)
    Select(browser.find_element(By.ID, "relabel-to")).select_by_value(other)
    before = loads(browser)
    browser.find_element(By.ID, "relabel-selected").click()
    WebDriverWait(browser, WAIT_S).until(loaded(browser, before))
    assert decision(browser, third) == f"relabel → {other}"
    assert browser.find_element(By.ID, "review-error").is_displayed() is False

    # an error of the API is shown in the page: signed out (cookie gone), a decision is refused
    cookie = browser.get_cookie("clear_api_key")
    browser.delete_cookie("clear_api_key")
    tick(browser, flagged[3])
    browser.find_element(By.ID, "drop-selected").click()
    WebDriverWait(browser, WAIT_S).until(lambda d: d.find_element(By.ID, "review-error").is_displayed())
    error = browser.find_element(By.ID, "review-error").text
    assert error.startswith("401 missing_api_key: ") and "sign in again" in error
    browser.add_cookie({k: cookie[k] for k in ("name", "value", "path", "httpOnly", "sameSite") if k in cookie})

    # the decisions are stored: a reload shows them, and the decided filter finds exactly them
    browser.refresh()
    WebDriverWait(browser, WAIT_S).until(lambda d: d.execute_script("return document.body.dataset.reviewReady"))
    assert decision(browser, first).startswith("accept → ") and decision(browser, third) == f"relabel → {other}"
    assert decision(browser, flagged[3]) == ""  # the refused drop stored nothing
    choose(browser, "filter-decided", "true")
    assert sorted(row_indices(browser)) == sorted([first, second, third])
    choose(browser, "filter-decided", "false")
    assert not set(row_indices(browser)) & {first, second, third}
    choose(browser, "filter-decided", "")
    screenshot(browser, "dashboard-review.png")

    # publish a version: its id, lineage and a link to its rows; exactly those three labels changed
    browser.find_element(By.ID, "publish-version").click()
    WebDriverWait(browser, WAIT_S).until(lambda d: d.find_elements(By.ID, "version-id")
                                         or d.find_element(By.ID, "version-error").is_displayed())
    assert not browser.find_element(By.ID, "version-error").is_displayed(), \
        browser.find_element(By.ID, "version-error").text
    version_id = browser.find_element(By.ID, "version-id").text
    lineage = {span.get_attribute("data-key"): span.text
               for span in browser.find_elements(By.CSS_SELECTOR, "#version-lineage span[data-key]")}
    assert lineage["accepted"] == "accepted 2" and lineage["relabelled"] == "relabelled 1"
    assert lineage["labels_changed"] == "labels changed 3" and lineage["dropped"] == "dropped 0"
    download = browser.find_element(By.ID, "version-download").get_attribute("href")
    assert download.endswith(f"/v1/datasets/{version_id}/rows.csv")
    assert httpx.get(download, headers=_auth(), timeout=30).status_code == 200
    version = httpx.get(f"{live_service}/v1/datasets/{version_id}", headers=_auth(), timeout=30).json()
    assert version["from_job_id"] == job_id and version["row_count"] == 60
    parent_rows, new_rows = api_rows(live_service, version["parent_id"]), api_rows(live_service, version_id)
    assert [r["id"] for r in new_rows] == [r["id"] for r in parent_rows]
    changed = {i: new["label"] for i, (old, new) in enumerate(zip(parent_rows, new_rows))
               if old["label"] != new["label"]}
    assert changed == {first: by_index[first]["suggested_label"], second: by_index[second]["suggested_label"],
                       third: other}

    # retrain on it: a job made from this one, on the version, linked from the page
    browser.find_element(By.ID, "retrain").click()
    WebDriverWait(browser, WAIT_S).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#retrain-result a.retrain-link")
                                         or d.find_element(By.ID, "version-error").is_displayed())
    assert not browser.find_element(By.ID, "version-error").is_displayed(), \
        browser.find_element(By.ID, "version-error").text
    link = browser.find_element(By.CSS_SELECTOR, "#retrain-result a.retrain-link")
    new_job = httpx.get(f"{live_service}/v1/jobs/{link.text}", headers=_auth(), timeout=30).json()
    assert new_job["from_job_id"] == job_id and new_job["dataset_id"] == version_id
    assert link.get_attribute("href").endswith(f"/ui/jobs/{new_job['id']}")
    screenshot(browser, "dashboard-review-published.png")
    # no need to train it: cancel (it may still be queued or already running on the live worker)
    httpx.post(f"{live_service}/v1/jobs/{new_job['id']}/cancel", headers=_auth(), timeout=30)
    assert wait_final(live_service, new_job["id"])["status"] in ("cancelled", "succeeded", "failed")

    link.click()
    WebDriverWait(browser, WAIT_S).until(lambda d: d.find_elements(By.ID, "from-job"))
    source = browser.find_element(By.ID, "from-job")
    assert source.text == job_id and source.get_attribute("href").endswith(f"/ui/jobs/{job_id}")
    assert "made from the review of" in browser.find_element(By.ID, "dataset-lineage").text
    screenshot(browser, "dashboard-retrained.png")

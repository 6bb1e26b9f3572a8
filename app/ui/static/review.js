// The review screen of a finished job's page. The report table (first page rendered by the server) is paged,
// filtered (flagged, given label, suggested label, decided) and searched through GET /v1/jobs/{id}/noise-report;
// the rows ticked are decided (accept the suggestion, keep the given label, relabel, drop) with
// POST /v1/jobs/{id}/noise-report/decisions and the page is read again, so the decision column shows what the
// service stored; "Publish version" makes the reviewed dataset (POST /v1/datasets/{id}/versions) and "Retrain
// on it" a job on it from this one (POST /v1/jobs with from_job).
//
// Reads ride on the HttpOnly sign-in cookie. Writes send, with that cookie, the CSRF token the server embedded
// in the page (X-CSRF-Token; see app/api/auth.py): the API key itself never reaches this script. Every error
// the API answers is shown next to the button that caused it.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("dashboard-data").textContent);
  const review = data.review, table = document.getElementById("flagged-table");
  if (!review || !table) return;
  const $ = id => document.getElementById(id);
  const body = table.tBodies[0], hasIds = table.dataset.hasIds === "true";
  const jobApi = `/v1/jobs/${encodeURIComponent(data.job_id)}`;
  const ACTIONS = ["accept", "keep", "relabel", "drop"];
  // cursors[k] opens page k (cursor pages only go forward: the ones seen are kept to go back)
  const state = { cursors: [null], page: 0, next: review.next_cursor, count: review.count, busy: false,
                  filters: Object.assign({}, review.filters), shown: body.rows.length };

  class ApiError extends Error {}

  // A request to the API; the parsed JSON answer, or an ApiError carrying the service's message.
  async function call(method, url, payload) {
    const headers = { Accept: "application/json" };
    if (payload !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET" && review.csrf_token) headers["X-CSRF-Token"] = review.csrf_token;
    let response;
    try {
      response = await fetch(url, { method, headers, credentials: "same-origin",
                                    body: payload === undefined ? undefined : JSON.stringify(payload) });
    } catch (err) {
      throw new ApiError(`the service did not answer (${err.message}): check the connection and try again`);
    }
    let answer = null;
    try { answer = await response.json(); } catch (_) { answer = null; }
    if (!response.ok) {
      const error = (answer && answer.error) || {};
      let message = `${response.status}${error.code ? ` ${error.code}` : ""}: ${error.message || response.statusText}`;
      const details = (error.details || []).map(d => d.message || d.msg).filter(Boolean);
      if (details.length) message += ` (${details.slice(0, 5).join("; ")}${details.length > 5 ? "; …" : ""})`;
      if (response.status === 401 && error.code !== "csrf_failed") message += " — sign in again at /ui/login";
      throw new ApiError(message);
    }
    return answer;
  }

  function showError(id, err) {
    const box = $(id);
    box.textContent = err ? (err instanceof ApiError ? err.message : `unexpected error: ${err}`) : "";
    box.hidden = !err;
  }

  function decisionText(action, label) {
    if (!action) return "";
    return (action === "accept" || action === "relabel") && label != null ? `${action} → ${label}` : action;
  }

  function td(text, className, value) {
    const cell = document.createElement("td");
    if (className) cell.className = className;
    if (value !== undefined) cell.dataset.value = value;
    if (text != null) cell.textContent = text;
    return cell;
  }

  function tag(name, className, text) {
    const node = document.createElement(name);
    node.className = className;
    node.textContent = text;
    return node;
  }

  function labelCell(kind, label) {
    const cell = td();
    cell.appendChild(tag("span", `label ${kind}`, label));
    return cell;
  }

  // one table row, cell for cell as the server renders it (app/ui/templates/job.html)
  function renderRow(row) {
    const tr = document.createElement("tr"), pick = document.createElement("input"), first = td(null, "pick");
    Object.assign(pick, { type: "checkbox", className: "row-pick", value: String(row.row_index) });
    pick.dataset.given = row.given_label; pick.dataset.suggested = row.suggested_label;
    pick.setAttribute("aria-label", `select row ${row.row_index}`);
    first.appendChild(pick);
    const split = td(null, "split"), text = td(row.text, "text");
    split.appendChild(tag("span", `split ${row.split}`, row.split));
    text.title = row.text;
    if (row.text_pair) text.append(" ", tag("span", "pair", `‖ ${row.text_pair}`));
    const decision = td(decisionText(row.decision, row.decision_label), "decision");
    decision.dataset.action = row.decision || "";
    tr.append(first, td(row.rank, null, row.rank), td(row.row_index, null, row.row_index), split);
    if (hasIds) tr.append(td(row.id ?? ""));
    tr.append(text, labelCell("given", row.given_label), labelCell("predicted", row.predicted_label),
              labelCell("suggested", row.suggested_label),
              td(row.suggested_confidence.toFixed(2), null, row.suggested_confidence), decision,
              td(row.p_clean == null ? "" : row.p_clean.toFixed(3), null, row.p_clean ?? -1),
              td(row.label_quality.toFixed(4), "quality", row.label_quality), td(row.flag_reason || "", "reason"));
    return tr;
  }

  function readFilters() {
    const form = $("report-filters"), filters = {};
    for (const name of ["flagged", "given_label", "suggested_label", "decided"]) {
      const value = form.elements[name].value;
      if (value !== "") filters[name] = value;
    }
    const q = form.elements.q.value.trim();
    if (q) filters.q = q;
    return filters;
  }

  function query(filters, extra) {
    const params = new URLSearchParams(extra || {});
    Object.entries(filters).forEach(([k, v]) => params.set(k, String(v)));
    const text = params.toString();
    return text ? `?${text}` : "";
  }

  function showPager() {
    const start = state.page * review.page_rows;
    $("page-info").textContent = state.count
      ? `rows ${state.shown ? start + 1 : 0}–${start + state.shown} of ${state.count}` : "no rows";
    $("page-prev").disabled = state.busy || state.page === 0;
    $("page-next").disabled = state.busy || !state.next;
    $("no-rows").hidden = state.shown > 0;
    $("download-filtered").href = `${jobApi}/noise-report.csv${query(state.filters)}`;
  }

  function selected() {
    return Array.from(body.querySelectorAll("input.row-pick:checked"));
  }

  function showSelection() {
    const picks = selected(), all = body.querySelectorAll("input.row-pick");
    $("selected-count").textContent = `${picks.length} row${picks.length === 1 ? "" : "s"} selected`;
    for (const action of ACTIONS) $(`${action}-selected`).disabled = state.busy || !review.can_write || !picks.length;
    $("select-all").checked = all.length > 0 && picks.length === all.length;
    $("select-all").indeterminate = picks.length > 0 && picks.length < all.length;
  }

  // Read page `page` under the current filters from the API and show it (the decisions as stored).
  async function load(page) {
    state.busy = true; showPager(); showSelection();
    table.dataset.state = "loading";
    try {
      const answer = await call("GET", `${jobApi}/noise-report${query(state.filters, {
        limit: review.page_rows, ...(state.cursors[page] ? { cursor: state.cursors[page] } : {}) })}`);
      body.replaceChildren(...answer.data.map(renderRow));
      table.querySelectorAll("th").forEach(th => th.classList.remove("sorted-asc", "sorted-desc"));
      Object.assign(state, { page, next: answer.next_cursor, count: answer.count, shown: answer.data.length });
      state.cursors.length = page + 1;
      if (answer.next_cursor) state.cursors.push(answer.next_cursor);
      showError("review-error", null);
    } catch (err) {
      showError("review-error", err);
    } finally {
      state.busy = false; table.dataset.state = "ready";
      table.dataset.loads = String(Number(table.dataset.loads || 0) + 1);
      showPager(); showSelection();
    }
  }

  async function decide(action) {
    const picks = selected();
    if (!picks.length) return;
    const label = $("relabel-to").value;
    const decisions = picks.map(p => Object.assign({ row_index: Number(p.value), action },
                                                    action === "relabel" ? { label } : {}));
    state.busy = true; showSelection();
    try {
      const answer = await call("POST", `${jobApi}/noise-report/decisions`, { decisions });
      const counts = Object.entries(answer.by_action).filter(([, n]) => n).map(([a, n]) => `${a} ${n}`);
      $("review-status").textContent = `recorded ${answer.recorded} decision${answer.recorded === 1 ? "" : "s"}` +
        (counts.length ? ` (${counts.join(", ")})` : "");
      showError("review-error", null);
      state.busy = false;
      await load(state.page);  // the stored decisions, and under "undecided" the rows left to decide
    } catch (err) {
      showError("review-error", err);
    } finally {
      state.busy = false; showSelection();
    }
  }

  function showVersion(version) {
    const box = $("version-result"), line = document.createElement("p");
    const name = tag("span", "", version.name), rows = tag("span", "", String(version.row_count));
    const lineage = document.createElement("span"), link = document.createElement("a"), id = tag("b", "", version.id);
    id.id = "version-id"; name.id = "version-name"; rows.id = "version-rows"; lineage.id = "version-lineage";
    Object.entries(version.lineage || {}).filter(([, n]) => !(Array.isArray(n) && !n.length)).forEach(([key, n], k) => {
      const part = tag("span", "", `${key.replace(/_/g, " ")} ${Array.isArray(n) ? n.join(", ") : n}`);
      part.dataset.key = key;
      lineage.append(...(k ? [" · ", part] : [part]));
    });
    Object.assign(link, { id: "version-download", href: `/v1/datasets/${encodeURIComponent(version.id)}/rows.csv`,
                          textContent: "its rows (CSV)" });
    link.setAttribute("download", "");
    line.append("Version ", id, " “", name, "”: ", rows, " rows · ", lineage, " · ", link);
    box.replaceChildren(line);
    box.hidden = false;
    $("retrain").dataset.datasetId = version.id;
    $("retrain").disabled = !review.can_write;
  }

  async function publish() {
    const button = $("publish-version");
    button.disabled = true;
    try {
      const version = await call("POST", `/v1/datasets/${encodeURIComponent(review.dataset_id)}/versions`,
                                 { from_job: data.job_id });
      showVersion(version);
      showError("version-error", null);
    } catch (err) {
      showError("version-error", err);
    } finally {
      button.disabled = !review.can_write;
    }
  }

  async function retrain() {
    const button = $("retrain"), datasetId = button.dataset.datasetId;
    if (!datasetId) return;
    button.disabled = true;
    try {
      const job = await call("POST", "/v1/jobs", { dataset_id: datasetId, from_job: data.job_id });
      const item = document.createElement("li"), link = document.createElement("a");
      Object.assign(link, { className: "retrain-link", href: `/ui/jobs/${encodeURIComponent(job.id)}`,
                            textContent: job.id });
      item.append("retrained as ", link, " ", tag("span", `state ${job.status}`, job.status), ` on ${job.dataset_id}`);
      $("retrain-result").prepend(item);
      $("retrain-result").hidden = false;
      showError("version-error", null);
    } catch (err) {
      showError("version-error", err);
    } finally {
      button.disabled = !review.can_write;
    }
  }

  function apply(event) {
    if (event) event.preventDefault();
    state.filters = readFilters();
    state.cursors = [null];
    load(0);
  }

  let typing = null;
  $("report-filters").addEventListener("submit", apply);
  $("report-filters").querySelectorAll("select").forEach(s => s.addEventListener("change", () => apply()));
  $("filter-q").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(apply, 400); });
  $("page-prev").addEventListener("click", () => load(Math.max(0, state.page - 1)));
  $("page-next").addEventListener("click", () => load(state.page + 1));
  if (state.next) state.cursors.push(state.next);
  body.addEventListener("change", event => { if (event.target.matches("input.row-pick")) showSelection(); });
  $("select-all").addEventListener("change", event => {
    body.querySelectorAll("input.row-pick").forEach(p => { p.checked = event.target.checked; });
    showSelection();
  });
  for (const action of ACTIONS) $(`${action}-selected`).addEventListener("click", () => decide(action));
  $("publish-version").addEventListener("click", publish);
  $("retrain").addEventListener("click", retrain);
  showPager(); showSelection();
  table.dataset.state = "ready";
  document.body.dataset.reviewReady = "true";
})();

// The job page: draws its charts with Chart.js (the noise matrix as an SVG heatmap) from the JSON the server
// embedded, sorts the flagged-rows table, and, while the job runs, follows /v1/jobs/{id}/events/stream to move
// the progress bar, add each finished epoch to the plots and the epoch table, and show learning warnings as
// they come (the page reloads once the job is final, to show the report).
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("dashboard-data").textContent);
  const BLUE = "#2f6fde", ORANGE = "#e8871e", RED = "#c23b3b", GREY = "#9aa9b8", GREEN = "#1d8a4e",
        PURPLE = "#8e44ad";
  const SVG = "http://www.w3.org/2000/svg";
  const STAGES = { after_warmup: "after warm-up", end: "end of training" };
  Chart.defaults.animation = false;  // charts are complete as soon as they are drawn (and screenshots too)
  Chart.defaults.maintainAspectRatio = false;
  const charts = {};

  // a legend entry only for the series with a value (a run without held-out gold has no accuracy, say)
  const hasPoints = (item, chartData) => chartData.datasets[item.datasetIndex].data.some(v => v != null);

  function line(id, series, yOptions) {
    const canvas = document.getElementById(id);
    if (!canvas) return null;
    return new Chart(canvas, {
      type: "line",
      data: { labels: data.epochs.map(e => e.epoch), datasets: series.map(s => ({
        label: s.label, data: data.epochs.map(e => e[s.key] ?? null), borderColor: s.color,
        backgroundColor: s.color, borderDash: s.dash ? [5, 4] : [], spanGaps: true, tension: 0.2,
        _key: s.key })) },
      options: { scales: { x: { title: { display: true, text: "epoch" } }, y: yOptions || {} },
                 plugins: { legend: { position: "bottom", labels: { filter: hasPoints } } } },
    });
  }

  function drawEpochs() {
    charts.loss = line("chart-loss", [{ label: "training loss", key: "train_loss", color: BLUE },
                                      { label: "held-out loss", key: "eval_loss", color: ORANGE }]);
    charts.accuracy = line("chart-accuracy", [
      { label: "held-out accuracy", key: "eval_accuracy", color: GREEN },
      { label: "held-out macro F1", key: "eval_macro_f1", color: ORANGE },
      { label: "held-out agreement (given labels)", key: "validation_agreement", color: BLUE },
      { label: "majority-class rate", key: "validation_majority_rate", color: GREY, dash: true }], { min: 0, max: 1 });
    // the p_clean statistics of each epoch come from the clean-probability pass run before it: the last pass
    charts.lastPass = line("chart-last-pass", [
      { label: "last pass p_clean mean", key: "last_pass_p_clean_mean", color: BLUE },
      { label: "last pass p_clean < 0.5 (fraction)", key: "last_pass_p_clean_below_half", color: RED },
      { label: "last pass p_clean AUROC (gold)", key: "last_pass_p_clean_auroc", color: PURPLE }], { min: 0, max: 1 });
    showNotes();
  }

  function showNotes() {
    const has = key => data.epochs.some(e => e[key] != null);
    document.getElementById("accuracy-note").hidden =
      has("eval_accuracy") || has("validation_agreement") || !data.final;
    document.getElementById("last-pass-note").hidden = has("last_pass_p_clean_mean") || !data.final;
  }

  function cellText(value) {
    if (value == null) return "";
    return typeof value === "number" && !Number.isInteger(value) ? value.toFixed(3) : String(value);
  }

  function addEpochRow(metrics) {
    const body = document.querySelector("#epoch-table tbody");
    if (!body) return;
    const row = document.createElement("tr");
    for (const key of ["epoch", ...data.epoch_columns]) {
      const td = document.createElement("td");
      td.textContent = cellText(metrics[key]);
      row.appendChild(td);
    }
    body.appendChild(row);
  }

  function addEpoch(metrics) {
    data.epochs.push(metrics);
    for (const chart of [charts.loss, charts.accuracy, charts.lastPass]) {
      if (!chart) continue;
      chart.data.labels.push(metrics.epoch);
      chart.data.datasets.forEach(d => d.data.push(metrics[d._key] ?? null));
      chart.update();
    }
    addEpochRow(metrics);
  }

  function addWarning(event) {
    const item = document.createElement("li"), stage = document.createElement("b");
    const when = (event.data || {}).stage;
    item.className = "warning";
    stage.textContent = `${STAGES[when] || when || "warning"}:`;
    item.append(stage, ` ${event.message || ""}`);
    document.getElementById("warning-list").appendChild(item);
    document.getElementById("warnings").hidden = false;
  }

  // Draws each class's threshold as a dashed vertical line on the label_quality axis, labelled with the class
  // (labels stacked so that close thresholds stay readable), and records where on the canvas's data-thresholds.
  const thresholdLines = { id: "thresholds", afterDatasetsDraw(chart, _args, options) {
    const lines = options.lines || [], x = chart.scales.x, area = chart.chartArea, ctx = chart.ctx;
    if (!lines.length) return;
    const drawn = [];
    ctx.save(); ctx.font = "11px system-ui"; ctx.textBaseline = "top";
    lines.forEach((t, k) => {  // with offset bins the axis runs linearly from 0 (left edge) to 1 (right edge)
      const px = x.left + Math.min(Math.max(t.value, 0), 1) * (x.right - x.left);
      ctx.strokeStyle = t.color; ctx.fillStyle = t.color; ctx.lineWidth = 1.5; ctx.setLineDash([5, 3]);
      ctx.beginPath(); ctx.moveTo(px, area.top); ctx.lineTo(px, area.bottom); ctx.stroke();
      const text = `${t.label} ${t.value.toFixed(2)}`, width = ctx.measureText(text).width;
      const tx = px + 3 + width > area.right ? px - 3 - width : px + 3;
      ctx.fillText(text, tx, area.top + 2 + 13 * (k % 8));
      drawn.push({ label: t.label, value: t.value, x: px });
    });
    ctx.restore();
    chart.canvas.dataset.thresholds = JSON.stringify(drawn);
  } };

  function drawHistogram(h, thresholds) {
    const bins = h.flagged.map((_, i) => `${h.edges[i].toFixed(2)}–${h.edges[i + 1].toFixed(2)}`);
    charts.pclean = new Chart(document.getElementById("chart-pclean"), {
      type: "bar",
      data: { labels: bins, datasets: [{ label: "kept", data: h.unflagged, backgroundColor: GREY },
                                       { label: "flagged", data: h.flagged, backgroundColor: RED }] },
      options: { scales: { x: { stacked: true, title: { display: true, text: h.field } },
                           y: { stacked: true, title: { display: true, text: "rows" } } },
                 plugins: { legend: { position: "bottom" }, thresholds: { lines: thresholds } } },
      plugins: [thresholdLines],
    });
  }

  function drawReport(stats) {
    drawHistogram(stats.histogram, data.thresholds || []);
    drawNoiseMatrix(document.getElementById("noise-matrix"), stats.noise_matrix);
    charts.noise = new Chart(document.getElementById("chart-noise"), {
      type: "bar",
      data: { labels: stats.per_class.map(c => c.label), datasets: [{ label: "estimated noise rate",
        data: stats.per_class.map(c => c.estimated_noise_rate), backgroundColor: ORANGE }] },
      options: { scales: { y: { min: 0, suggestedMax: 0.5, title: { display: true, text: "P(true ≠ given | given)" } },
                           x: { title: { display: true, text: "given label" } } },
                 plugins: { legend: { display: false }, tooltip: { callbacks: { afterLabel: ctx => {
                   const c = stats.per_class[ctx.dataIndex];
                   return `${c.flagged} of ${c.rows} rows flagged`; } } } } },
    });
    drawConfusion(stats.confusion);
  }

  function svg(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
    if (text != null) node.textContent = text;
    return node;
  }

  const percent = v => `${(100 * v).toFixed(1)}%`;
  const short = name => name.length > 10 ? `${name.slice(0, 9)}…` : name;

  // The noise matrix P(given = i, true = j) as an SVG heatmap: rows given, columns true, each cell's share of
  // all rows printed on it; the diagonal (labels right) in blue, the off-diagonal (noise) in red, each shaded
  // against its own largest cell so that small noise cells stay visible.
  function drawNoiseMatrix(box, matrix) {
    if (!box || !matrix || !matrix.joint) return;
    const labels = matrix.labels, k = labels.length, joint = matrix.joint, cell = 48, left = 84, top = 40;
    const width = left + k * cell + 4, height = top + k * cell + 4, mid = top + k * cell / 2;
    const off = joint.flatMap((row, i) => row.filter((_, j) => i !== j));
    const diagMax = Math.max(1e-12, ...joint.map((row, i) => row[i])), offMax = Math.max(1e-12, ...off);
    const root = svg("svg", { id: "noise-matrix-svg", viewBox: `0 0 ${width} ${height}`, width: "100%",
                              height: "100%", role: "img",
                              "aria-label": "estimated noise matrix: rows given label, columns true label" });
    root.append(svg("text", { class: "axis", x: left + k * cell / 2, y: 11 }, "true label →"),
                svg("text", { class: "axis", x: 11, y: mid, transform: `rotate(-90 11 ${mid})` }, "given label →"));
    labels.forEach((name, j) => root.append(
      svg("text", { class: "tick", x: left + j * cell + cell / 2, y: top - 8 }, short(name))));
    labels.forEach((name, i) => root.append(
      svg("text", { class: "tick row", x: left - 6, y: top + i * cell + cell / 2 }, short(name))));
    joint.forEach((row, i) => row.forEach((v, j) => {
      const diagonal = i === j, shade = diagonal ? v / diagMax : v / offMax;
      const fill = diagonal ? `rgba(47,111,222,${0.12 + 0.8 * shade})` : `rgba(194,59,59,${0.04 + 0.86 * shade})`;
      const group = svg("g", { class: diagonal ? "cell diagonal" : "cell", "data-given": labels[i],
                               "data-true": labels[j], "data-value": v });
      const x = left + j * cell, y = top + i * cell;
      group.append(svg("rect", { x: x + 1, y: y + 1, width: cell - 2, height: cell - 2, rx: 3, fill }),
                   svg("text", { class: "value", x: x + cell / 2, y: y + cell / 2,
                                 fill: shade > 0.6 ? "#fff" : "#1f2933" }, percent(v)),
                   svg("title", {}, `given ${labels[i]}, true ${labels[j]}: ${percent(v)} of all rows`));
      root.append(group);
    }));
    box.appendChild(root);
  }

  function drawConfusion(confusion) {
    const labels = confusion.labels, cells = [];
    let max = 1;
    confusion.matrix.forEach((row, i) => row.forEach((v, j) => { cells.push({ x: labels[j], y: labels[i], v });
                                                                 max = Math.max(max, v); }));
    charts.confusion = new Chart(document.getElementById("chart-confusion"), {
      type: "matrix",
      data: { datasets: [{ label: "rows", data: cells,
        backgroundColor: c => { const v = c.raw.v / max, blue = c.raw.x === c.raw.y;
          return blue ? `rgba(47,111,222,${0.1 + 0.9 * v})` : `rgba(194,59,59,${0.08 + 0.92 * v})`; },
        borderColor: "#fff", borderWidth: 1,
        width: ({ chart }) => (chart.chartArea || {}).width / labels.length - 1,
        height: ({ chart }) => (chart.chartArea || {}).height / labels.length - 1 }] },
      options: { plugins: { legend: { display: false }, tooltip: { callbacks: {
                   title: () => "", label: c => `given ${c.raw.y} → predicted ${c.raw.x}: ${c.raw.v} rows` } } },
                 scales: { x: { type: "category", labels, offset: true, grid: { display: false },
                                title: { display: true, text: "predicted" } },
                           y: { type: "category", labels, offset: true, reverse: false, grid: { display: false },  // first label on top
                                title: { display: true, text: "given" } } } },
      plugins: [{ id: "counts", afterDatasetsDraw(chart) {  // print each cell's count on it
        const ctx = chart.ctx; ctx.save(); ctx.textAlign = "center"; ctx.textBaseline = "middle";
        ctx.font = "12px system-ui"; chart.getDatasetMeta(0).data.forEach((el, k) => {
          const c = cells[k], p = el.getCenterPoint(); ctx.fillStyle = c.v / max > 0.5 ? "#fff" : "#1f2933";
          ctx.fillText(String(c.v), p.x, p.y); }); ctx.restore(); } }],
    });
  }

  function sortable(table) {
    table.querySelectorAll("th[data-sort]").forEach((th, _) => th.addEventListener("click", () => {
      const col = Array.from(th.parentNode.children).indexOf(th), numeric = th.dataset.sort === "num";
      const asc = !th.classList.contains("sorted-asc");
      table.querySelectorAll("th").forEach(x => x.classList.remove("sorted-asc", "sorted-desc"));
      th.classList.add(asc ? "sorted-asc" : "sorted-desc");
      const key = tr => { const td = tr.children[col]; return numeric ? parseFloat(td.dataset.value) : td.textContent.trim(); };
      const rows = Array.from(table.tBodies[0].rows);
      rows.sort((a, b) => { const x = key(a), y = key(b); return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); });
      rows.forEach(r => table.tBodies[0].appendChild(r));
    }));
  }

  function showProgress(p) {
    document.getElementById("progress-fill").style.width = `${(100 * p.progress).toFixed(1)}%`;
    const status = document.getElementById("job-status");
    status.textContent = p.status; status.className = `state ${p.status}`;
    const epoch = p.num_epochs ? `epoch ${Math.min((p.epoch ?? 0) + 1, p.num_epochs)}/${p.num_epochs}` : "";
    const step = p.max_steps ? `step ${p.global_step}/${p.max_steps}` : "";
    const loss = p.loss != null ? `loss ${p.loss.toFixed(4)}` : "";
    document.getElementById("progress-text").textContent =
      [`${(100 * p.progress).toFixed(0)}%`, epoch, step, p.phase || "", loss].filter(Boolean).join(" · ");
  }

  function follow() {
    const source = new EventSource(data.stream_url);
    source.addEventListener("progress", e => showProgress(JSON.parse(e.data)));
    source.addEventListener("epoch", e => addEpoch(JSON.parse(e.data).data));
    source.addEventListener("warning", e => addWarning(JSON.parse(e.data)));
    source.addEventListener("end", () => { source.close(); setTimeout(() => location.reload(), 500); });
  }

  drawEpochs();
  if (data.stats) drawReport(data.stats);
  document.querySelectorAll("table.sortable").forEach(sortable);
  if (!data.final) follow();
  document.body.dataset.chartsReady = "true";
})();

// The job page: draws its charts with Chart.js from the JSON the server embedded, sorts the flagged-rows
// table, and, while the job runs, follows /v1/jobs/{id}/events/stream to move the progress bar and add
// each finished epoch to the plots (the page reloads once the job is final, to show the report).
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("dashboard-data").textContent);
  const BLUE = "#2f6fde", ORANGE = "#e8871e", RED = "#c23b3b", GREY = "#9aa9b8", GREEN = "#1d8a4e";
  Chart.defaults.animation = false;  // charts are complete as soon as they are drawn (and screenshots too)
  Chart.defaults.maintainAspectRatio = false;
  const charts = {};

  function line(id, series, yOptions) {
    const canvas = document.getElementById(id);
    if (!canvas) return null;
    return new Chart(canvas, {
      type: "line",
      data: { labels: data.epochs.map(e => e.epoch), datasets: series.map(s => ({
        label: s.label, data: data.epochs.map(e => e[s.key] ?? null), borderColor: s.color,
        backgroundColor: s.color, spanGaps: true, tension: 0.2, _key: s.key })) },
      options: { scales: { x: { title: { display: true, text: "epoch" } }, y: yOptions || {} },
                 plugins: { legend: { position: "bottom" } } },
    });
  }

  function drawEpochs() {
    charts.loss = line("chart-loss", [{ label: "training loss", key: "train_loss", color: BLUE },
                                      { label: "held-out loss", key: "eval_loss", color: ORANGE }]);
    charts.accuracy = line("chart-accuracy", [{ label: "held-out accuracy", key: "eval_accuracy", color: GREEN },
                                              { label: "held-out macro F1", key: "eval_macro_f1", color: ORANGE }],
                           { min: 0, max: 1 });
    const hasAccuracy = data.epochs.some(e => e.eval_accuracy != null);
    document.getElementById("accuracy-note").hidden = hasAccuracy || !data.final;
  }

  function addEpoch(metrics) {
    data.epochs.push(metrics);
    for (const chart of [charts.loss, charts.accuracy]) {
      if (!chart) continue;
      chart.data.labels.push(metrics.epoch);
      chart.data.datasets.forEach(d => d.data.push(metrics[d._key] ?? null));
      chart.update();
    }
  }

  function drawReport(stats) {
    const h = stats.histogram;
    const bins = h.flagged.map((_, i) => `${h.edges[i].toFixed(2)}–${h.edges[i + 1].toFixed(2)}`);
    charts.pclean = new Chart(document.getElementById("chart-pclean"), {
      type: "bar",
      data: { labels: bins, datasets: [{ label: "kept", data: h.unflagged, backgroundColor: GREY },
                                       { label: "flagged", data: h.flagged, backgroundColor: RED }] },
      options: { scales: { x: { stacked: true, title: { display: true, text: h.field } },
                           y: { stacked: true, title: { display: true, text: "rows" } } },
                 plugins: { legend: { position: "bottom" } } },
    });
    charts.noise = new Chart(document.getElementById("chart-noise"), {
      type: "bar",
      data: { labels: stats.per_class.map(c => c.label), datasets: [{ label: "estimated noise rate",
        data: stats.per_class.map(c => c.estimated_noise_rate), backgroundColor: ORANGE }] },
      options: { scales: { y: { min: 0, suggestedMax: 0.5, title: { display: true, text: "flagged / rows" } },
                           x: { title: { display: true, text: "given label" } } },
                 plugins: { legend: { display: false }, tooltip: { callbacks: { afterLabel: ctx =>
                   `${stats.per_class[ctx.dataIndex].flagged} of ${stats.per_class[ctx.dataIndex].rows} rows` } } } },
    });
    drawConfusion(stats.confusion);
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
    source.addEventListener("end", () => { source.close(); setTimeout(() => location.reload(), 500); });
  }

  drawEpochs();
  if (data.stats) drawReport(data.stats);
  document.querySelectorAll("table.sortable").forEach(sortable);
  if (!data.final) follow();
  document.body.dataset.chartsReady = "true";
})();

import { api } from "./api.js";
import { clear, el, whenPlotly } from "./dom.js";

const layout = (title, extra = {}) => ({
  title: { text: title, font: { size: 14 } },
  margin: { l: 55, r: 20, t: 40, b: 75 },
  autosize: true,
  height: 320,
  // At the foot of the figure, below the x axis's title (placed relative to the plot, it covered it).
  legend: { orientation: "h", yref: "container", y: 0, yanchor: "bottom" },
  ...extra,
});
const CONFIG = { responsive: true, displaylogo: false };

function card(label, value, extraClass = "") {
  return el("div", { class: `card ${extraClass}` }, el("div", { class: "value" }, value), el("div", { class: "label" }, label));
}

export function renderOverview(main, runId, summary, confusion = null) {
  clear(main);
  main.append(el("h1", {}, `Run ${summary.name}`));
  const cards = el("div", { class: "cards", id: "overview-cards" },
    card("status", summary.status),
    card("epochs recorded", summary.epochs),
    card("samples", summary.num_samples.toLocaleString()),
    card("evicted", summary.evicted.toLocaleString()),
    card("flagged", summary.flagged.toLocaleString()),
    card("relabelled", summary.relabeled.toLocaleString()),
  );
  main.append(cards);
  const truth = summary.ground_truth;
  if (truth) {
    main.append(el("div", { class: "cards" },
      card(`flipped labels among the ${truth.evicted} evicted (of ${truth.flipped} flipped on purpose)`, `${truth.flipped_among_evicted}`, "truth"),
      card(`flipped labels among the top ${truth.top_ranked} by score`, `${truth.flipped_among_top}`, "truth"),
      card("precision of evictions", truth.evicted ? `${Math.round(100 * truth.flipped_among_evicted / truth.evicted)}%` : "–", "truth"),
    ));
  }
  main.append(exportPanel(runId, summary));
  const charts = el("div", { class: "charts" },
    el("div", { class: "chart", id: "loss-chart", role: "img", "aria-label": "Loss distribution per epoch" }),
    el("div", { class: "chart", id: "visits-chart", role: "img", "aria-label": "Histogram of visits per sample" }),
    el("div", { class: "chart", id: "evictions-chart", role: "img", "aria-label": "Evictions per epoch" }),
  );
  main.append(charts, confusionPanel(runId, summary, confusion));
  whenPlotly(() => {
    if (!charts.isConnected) return;
    drawCharts(summary);
    drawConfusion(runId, summary, confusion);
  });
}

// Label x latest prediction: each cell opens the gallery of exactly its samples.
function confusionPanel(runId, summary, confusion) {
  const section = el("section", { class: "card confusion", id: "confusion", "aria-label": "Label by prediction" },
    el("h2", {}, "Labels and the model's predictions"));
  if (!confusion) return section;
  if (!confusion.samples) {
    section.append(el("p", { class: "notice", id: "confusion-empty" }, "This run recorded no predictions (its loop reports losses only), so there is no confusion matrix. Report ", el("code", {}, "pred"), " and ", el("code", {}, "margin"), " with the losses to get one."));
    return section;
  }
  const names = confusion.class_names;
  const wrong = confusion.cells.filter((c) => c.label !== c.pred).reduce((n, c) => n + c.count, 0);
  section.append(
    el("p", { class: "notice" }, `${confusion.samples.toLocaleString()} samples with a prediction; ${wrong.toLocaleString()} predicted as another class than their label. Click a cell to see its samples.`),
    el("div", { class: "chart", id: "confusion-chart", role: "img", "aria-label": "Confusion matrix of label by latest prediction" }),
    el("details", {}, el("summary", {}, "as a table"), confusionTable(runId, names, confusion.cells)));
  return section;
}

// A cell's samples open in the gallery's default order: the most suspicious first.
function cellHref(runId, label, pred) {
  return `#/runs/${runId}/gallery?view=score&label=${label}&pred=${pred}`;
}

function confusionTable(runId, names, cells) {
  const count = new Map(cells.map((c) => [`${c.label},${c.pred}`, c.count]));
  return el("table", { class: "matrix", id: "confusion-table" },
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "label \\ predicted"), names.map((n) => el("th", { scope: "col" }, n)))),
    el("tbody", {}, names.map((rowName, label) => el("tr", {}, el("th", { scope: "row" }, rowName),
      names.map((_, pred) => {
        const n = count.get(`${label},${pred}`) ?? 0;
        return el("td", { class: label === pred ? "diagonal" : "" }, n ? el("a", { href: cellHref(runId, label, pred) }, n.toLocaleString()) : "·");
      })))));
}

export function drawConfusion(runId, summary, confusion) {
  const node = document.getElementById("confusion-chart");
  if (!window.Plotly || !node?.isConnected || !confusion) return;
  const names = confusion.class_names;
  const z = names.map(() => names.map(() => 0));
  for (const c of confusion.cells) if (c.label < names.length && c.pred < names.length) z[c.label][c.pred] = c.count;
  // Off the diagonal is what matters; a log colour scale keeps small cells visible.
  const shown = z.map((row) => row.map((n) => (n ? Math.log10(n + 1) : null)));
  const labels = names.map((n, i) => (n.startsWith(String(i)) ? n : `${i}: ${n}`));
  Plotly.react(node, [{
    type: "heatmap", x: labels, y: labels, z: shown, customdata: z, colorscale: "Blues", reversescale: true, showscale: false, xgap: 1, ygap: 1,
    hovertemplate: "label %{y}<br>predicted %{x}<br>%{customdata} samples<extra></extra>",
  }], layout("Label (rows) by latest prediction (columns)", {
    height: Math.min(640, 140 + 28 * names.length),
    xaxis: { title: { text: "predicted" }, type: "category", side: "bottom" },
    yaxis: { title: { text: "label" }, type: "category", autorange: "reversed" },
    margin: { l: 90, r: 20, t: 40, b: 70 },
  }), CONFIG);
  node.removeAllListeners?.("plotly_click");
  node.on("plotly_click", (event) => {
    const point = event.points?.[0];
    if (point) location.hash = cellHref(runId, point.pointIndex[0], point.pointIndex[1]);
  });
}

// The export, with what it will hold under the chosen policy before anything downloads.
function exportPanel(runId, summary) {
  const policy = el("select", { id: "export-policy", "aria-label": "Evicted samples nobody reviewed" },
    el("option", { value: "drop" }, "drop them (default)"),
    el("option", { value: "keep" }, "keep them"),
    el("option", { value: "mark" }, "keep them, marked for review"));
  const counts = el("p", { id: "export-counts", role: "status", "aria-live": "polite" }, "…");
  const csvLink = el("a", { id: "export-csv", download: `run-${runId}-manifest.csv` }, "Export cleaned manifest (CSV)");
  const jsonLink = el("a", { id: "export-jsonl", download: `run-${runId}-manifest.jsonl` }, "Export (JSON lines)");
  const update = async () => {
    csvLink.href = api.exportUrl(runId, "csv", policy.value);
    jsonLink.href = api.exportUrl(runId, "jsonl", policy.value);
    const c = await api.exportCounts(runId, policy.value);
    const evicted = c.dropped_evicted_unreviewed + c.kept_evicted_unreviewed;
    counts.textContent = `keeps ${c.kept.toLocaleString()}; drops ${c.dropped.toLocaleString()}: ${c.dropped_by_reviewer.toLocaleString()} dropped by a reviewer, ${c.dropped_evicted_unreviewed.toLocaleString()} evicted and not reviewed · ${c.kept_by_reviewer.toLocaleString()} kept or relabelled by a reviewer · ${evicted.toLocaleString()} evicted in all without a review`;
  };
  policy.addEventListener("change", () => update().catch(() => { counts.textContent = "counts unavailable"; }));
  update().catch(() => { counts.textContent = "counts unavailable"; });
  return el("section", { class: "card", "aria-label": "Export" },
    el("h2", {}, "Export"),
    el("p", { class: "notice", id: "decision-scope" }, `Decisions belong to the dataset ${summary.dataset_name ?? ""}: every run over it shows and exports them. A reviewer's decision always wins over the sampler's evictions.`),
    el("div", { class: "export" }, el("label", {}, "Evicted samples nobody reviewed: ", policy), csvLink, jsonLink),
    counts);
}

export function drawCharts(summary) {
  if (!window.Plotly || !document.getElementById("loss-chart")) return;
  const epochs = summary.epochs_detail.map((e) => e.epoch);
  const pct = (i) => summary.epochs_detail.map((e) => (e.loss_percentiles ? e.loss_percentiles[i] : null));
  const names = summary.percentiles;
  const band = (lo, hi, name, color) => [
    { x: epochs, y: pct(lo), mode: "lines", line: { width: 0 }, showlegend: false, hoverinfo: "skip" },
    { x: epochs, y: pct(hi), mode: "lines", line: { width: 0 }, fill: "tonexty", fillcolor: color, name },
  ];
  const config = CONFIG;
  Plotly.react("loss-chart", [
    ...band(0, 4, `p${names[0]}–p${names[4]}`, "rgba(36,87,214,0.15)"),
    ...band(1, 3, `p${names[1]}–p${names[3]}`, "rgba(36,87,214,0.3)"),
    { x: epochs, y: pct(2), mode: "lines+markers", name: "median", line: { color: "#2457d6" } },
  ], layout("Loss per epoch (median and percentile bands)", { xaxis: { title: { text: "epoch" }, dtick: 1 }, yaxis: { title: { text: "loss" } } }), config);
  const histogram = summary.visit_histogram;
  Plotly.react("visits-chart", [
    { x: histogram.map((_, i) => i), y: histogram, type: "bar", name: "samples", marker: { color: "#5b6475" } },
  ], layout("Visits per sample", { xaxis: { title: { text: "visits" } }, yaxis: { title: { text: "samples" }, type: "log" } }), config);
  Plotly.react("evictions-chart", [
    { x: epochs, y: summary.epochs_detail.map((e) => e.evicted_new), type: "bar", name: "new evictions", marker: { color: "#c62828" } },
    { x: epochs, y: summary.epochs_detail.map((e) => e.evicted_total), mode: "lines+markers", name: "evicted in total", yaxis: "y2" },
  ], layout("Evictions per epoch", {
    xaxis: { title: { text: "epoch" }, dtick: 1 },
    yaxis: { title: { text: "new" }, rangemode: "tozero" },
    // Round ticks of its own (an overlaying axis otherwise syncs to the left grid: 205, 409, ...).
    yaxis2: { overlaying: "y", side: "right", title: { text: "total" }, rangemode: "tozero", tickmode: "auto", showgrid: false, automargin: true },
    margin: { l: 55, r: 60, t: 40, b: 75 },
  }), config);
}


import { api } from "./api.js";
import { clear, el, fmt, replaceHash, whenPlotly } from "./dom.js";

export function historyList(detail) {
  const names = detail.class_names;
  const name = (label) => (label === null ? "none" : names[label] ?? String(label));
  const what = (a) => {
    if (a.kind === "relabel") return `relabelled as ${name(a.label)}`;
    if (a.kind === "keep") return "kept";
    if (a.kind === "drop") return "dropped";
    if (a.kind === "flag") return "flagged";
    if (a.kind === "unflag") return "unflagged";
    return a.reason ?? "undo";
  };
  const events = detail.review_history.map((a) => el("li", { class: a.undone_by !== null ? "undone" : "" },
    `${new Date(a.created_at).toLocaleString()}: ${what(a)} by ${a.author}${a.reason && a.kind !== "undo" ? ` (${a.reason})` : ""}${a.samples > 1 ? ` · ${a.samples} samples` : ""}`,
    a.undone_by !== null ? el("span", { class: "badge" }, " undone") : null));
  return el("ul", { class: "history", id: "history", "aria-label": "Review history" },
    events.length ? events : el("li", {}, "No decisions yet."));
}

// Epochs without a visit are gaps, not straight lines; the x axis spans the run's epochs.
export function drawTrajectory(detail, runEpochs) {
  if (!window.Plotly || !document.getElementById("trajectory-chart")) return;
  const span = Math.max(runEpochs, ...detail.trajectory.map((t) => t.epoch + 1), 1);
  const epochs = Array.from({ length: span }, (_, i) => i);
  const byEpoch = new Map(detail.trajectory.map((t) => [t.epoch, t]));
  const of = (field) => epochs.map((e) => byEpoch.get(e)?.[field] ?? null);
  const visits = detail.visit_losses;
  const jitter = new Map();
  const visitX = visits.map((v) => { const k = (jitter.get(v.epoch) ?? 0) + 1; jitter.set(v.epoch, k); return v.epoch + 0.08 * k; });
  const config = { responsive: true, displaylogo: false };
  const xaxis = { title: { text: "epoch" }, dtick: 1, range: [-0.5, span - 0.5] };
  const shapes = detail.evicted_epoch !== null ? [{ type: "line", x0: detail.evicted_epoch, x1: detail.evicted_epoch, yref: "paper", y0: 0, y1: 1, line: { color: "#c62828", dash: "dash" } }] : [];
  Plotly.react("trajectory-chart", [
    { x: epochs, y: of("mean_loss"), mode: "lines+markers", name: "mean per epoch", connectgaps: false },
    { x: epochs, y: of("max_loss"), mode: "lines", name: "max per epoch", line: { dash: "dot" }, connectgaps: false },
    { x: visitX, y: visits.map((v) => v.loss), mode: "markers", name: "each visit", marker: { size: 6, opacity: 0.6 } },
  ], { title: { text: "Loss trajectory", font: { size: 14 } }, autosize: true, height: 280, margin: { l: 45, r: 10, t: 40, b: 40 }, xaxis, shapes, legend: { orientation: "h", y: -0.3 } }, config);
  Plotly.react("visits-epoch-chart", [
    { x: epochs, y: epochs.map((e) => byEpoch.get(e)?.visits ?? 0), type: "bar", name: "visits" },
  ], { title: { text: "Visits per epoch", font: { size: 14 } }, autosize: true, height: 220, margin: { l: 45, r: 10, t: 40, b: 40 }, xaxis: { ...xaxis, title: undefined }, yaxis: { rangemode: "tozero" } }, config);
}

// Eviction is the sampler's suggestion: say what it rests on.
function evictionText(detail) {
  const base = `Evicted by the sampler in epoch ${detail.evicted_epoch}`;
  if (detail.wrong_since === null) return `${base} (visit limit or a reviewer's decision)`;
  return `${base}: the model has found another class more likely than its label at most of its first visits of an epoch since epoch ${detail.wrong_since} (suspicion ${fmt(detail.evidence_score)})`;
}

// Renders one sample; `actions` performs changes so review mode and this view share them.
// `options`: heading, the run's epochs, and `nav` (previous / next links of the list it came from).
export function renderSample(container, runId, detail, actions, options = {}) {
  const focused = document.activeElement?.id || null;
  clear(container);
  if (options.nav) container.append(options.nav);
  const heading = options.heading;
  const names = detail.class_names;
  const label = names[detail.label] ?? String(detail.label);
  container.append(el("h1", {}, heading ?? `Sample ${detail.sample_id}`));
  const viewer = el("div", { class: "viewer" },
    el("img", { src: api.imageUrl(runId, detail.sample_id), alt: `Sample ${detail.sample_id}, labelled ${label}`, width: 280, height: 280, id: "sample-image" }),
    el("p", {}, "Label: ", el("strong", { id: "current-label" }, label),
      detail.relabeled ? el("span", { class: "badge relabeled" }, ` was ${names[detail.original_label] ?? detail.original_label}`) : null),
    el("p", {}, `Suspicion ${fmt(detail.score)} · latest loss ${fmt(detail.last_loss)} · mean ${fmt(detail.mean_loss)} · max ${fmt(detail.max_loss)} · ${detail.visits} visits`),
    detail.last_pred !== null ? el("p", { id: "prediction" }, `Latest prediction: ${names[detail.last_pred] ?? detail.last_pred}`,
      detail.last_margin !== null ? ` (margin ${fmt(detail.last_margin, 2)}: ${detail.last_margin < 0 ? "the model prefers another class" : "the model agrees with the label"})` : "") : null,
    detail.evicted_epoch !== null ? el("p", { class: "error", id: "eviction" }, evictionText(detail)) : null,
    el("p", { class: "notice" }, detail.source ? `Source: ${detail.source}` : ""),
  );
  const classes = el("div", { class: "classes", role: "group", "aria-label": "Relabel as" },
    names.map((name, i) => el("button", { type: "button", id: `relabel-${i}`, "aria-pressed": i === detail.label ? "true" : "false", "data-class": i, onclick: () => actions.relabel(i) }, name.startsWith(String(i)) || i >= 10 ? name : `${i}: ${name}`)));
  const reason = el("input", { type: "text", id: "flag-reason", "aria-label": "Flag reason", placeholder: "reason", value: detail.flag_reason ?? "" });
  const note = el("textarea", { id: "note", "aria-label": "Note" });
  note.value = detail.note ?? "";
  const controls = el("div", { class: "viewer" },
    el("h2", {}, "Label"), classes,
    el("h2", {}, "Decision"),
    el("p", { class: "notice", id: "decision-scope" }, `Decisions belong to the dataset ${detail.dataset_name ?? ""}: every run over it shows and exports them.`),
    el("p", {},
      el("button", { type: "button", id: "keep", "aria-pressed": detail.verdict === "keep" ? "true" : "false", onclick: () => actions.keep() }, "Keep (v)"), " ",
      el("button", { type: "button", id: "drop", "aria-pressed": detail.verdict === "drop" ? "true" : "false", onclick: () => actions.drop() }, "Drop from export (x)"), " ",
      el("button", { type: "button", id: "undo", onclick: () => actions.undo() }, "Undo my last action (u)"),
      detail.verdict ? el("span", { class: `badge ${detail.verdict}`, id: "verdict" }, detail.verdict === "keep" ? "kept" : "dropped") : null),
    el("h2", {}, "Flag"),
    el("p", {}, el("button", { type: "button", id: "flag-toggle", onclick: () => actions.flag(!detail.flagged, reason.value) }, detail.flagged ? "Unflag (f)" : "Flag (f)"), " ", reason,
      detail.flagged ? el("span", { class: "badge flagged" }, `flagged${detail.flag_reason ? `: ${detail.flag_reason}` : ""}`) : null),
    el("h2", {}, "Note"), note,
    el("button", { type: "button", id: "save-note", onclick: () => actions.note(note.value) }, "Save note"),
    el("h2", {}, "History"), historyList(detail),
  );
  const charts = el("div", { class: "sample-charts" },
    el("div", { class: "chart", id: "trajectory-chart", role: "img", "aria-label": "Loss trajectory of this sample" }),
    el("div", { class: "chart", id: "visits-epoch-chart", role: "img", "aria-label": "Visits of this sample per epoch" }),
  );
  // Image, decisions and charts side by side: on a wide screen every control is above the fold.
  container.append(el("div", { class: "sample" }, viewer, controls, charts));
  whenPlotly(() => { if (charts.isConnected) drawTrajectory(detail, options.epochs ?? 0); });
  // A re-render after a click keeps the keyboard where it was (not on <body>).
  const again = focused ? document.getElementById(focused) : null;
  if (again && container.contains(again)) again.focus({ preventScroll: true });
}

/** The decisions on one sample. `decided()` runs after a decision (review mode advances);
 *  `refresh()` redraws the sample after an undo, a flag or a note. */
export function sampleActions(runId, sampleId, refresh, say, decided = refresh) {
  const wrap = (work, after) => async (...args) => {
    try { await work(...args); await (after ?? refresh)(); } catch (error) { say(error.message, true); }
  };
  const current = () => api.sample(runId, sampleId);
  return {
    relabel: wrap(async (label) => { await api.review(runId, "relabel", [sampleId], { label }); say(`Relabelled sample ${sampleId}`); }, () => decided()),
    keep: wrap(async () => { await api.review(runId, "keep", [sampleId]); say(`Kept sample ${sampleId}`); }, () => decided()),
    drop: wrap(async () => { await api.review(runId, "drop", [sampleId]); say(`Dropped sample ${sampleId} from the export`); }, () => decided()),
    undo: wrap(async () => { const result = await api.undoLatest(runId); say(result.message); }),
    flag: wrap(async (flagged, reason) => { await api.review(runId, flagged ? "flag" : "unflag", [sampleId], { reason: reason || null }); say(flagged ? `Flagged sample ${sampleId}` : `Unflagged sample ${sampleId}`); }),
    note: wrap(async (text) => { const d = await current(); await api.relabel(runId, sampleId, d.label, text); say("Note saved"); }),
  };
}

/** The previous / next links of a sample in the list it was opened from. */
export function neighbourLinks(detail, hrefOf) {
  return el("p", { class: "neighbours" },
    detail.previous_id !== null ? el("a", { href: hrefOf(detail.previous_id), id: "previous" }, "← previous") : el("span", { class: "notice" }, "first in this list"), " · ",
    detail.next_id !== null ? el("a", { href: hrefOf(detail.next_id), id: "next" }, "next →") : el("span", { class: "notice" }, "last in this list"));
}

/** The keys on one sample: j / k (or arrows) move within its list (replacing the history
 *  entry, so Back returns to the list), 0-9 relabel, f flag, x drop, v keep, u undo.
 *  `current()` is the detail on screen; returns false for a key it does not take. */
export function sampleKeys(current, actions, hrefOf) {
  return (key) => {
    const detail = current();
    if ((key === "ArrowRight" || key === "j") && detail.next_id !== null) return replaceHash(hrefOf(detail.next_id));
    if ((key === "ArrowLeft" || key === "k") && detail.previous_id !== null) return replaceHash(hrefOf(detail.previous_id));
    if (/^[0-9]$/.test(key) && Number(key) < detail.class_names.length) return actions.relabel(Number(key));
    if (key === "f") return actions.flag(!detail.flagged, document.getElementById("flag-reason")?.value);
    if (key === "x") return actions.drop();
    if (key === "v") return actions.keep();
    if (key === "u") return actions.undo();
    return false;
  };
}

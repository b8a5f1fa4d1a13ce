import { api } from "./api.js";
import { el } from "./dom.js";
import { drawCharts, renderOverview } from "./overview.js";
import { renderGallery } from "./gallery.js";
import { renderReview } from "./review.js";
import { renderSample, sampleActions } from "./sample.js";

const main = document.getElementById("main");
const runSelect = document.getElementById("run-select");
const statusBox = document.getElementById("run-status");
const help = document.getElementById("help");
let keyHandler = null;
let events = null;
let currentRun = null;
let summary = null;

function say(message, isError = false) {
  statusBox.replaceChildren(pill(summary?.status), el("span", { class: isError ? "error" : "" }, message));
}

function pill(status) {
  if (!status) return "";
  return el("span", { class: `pill ${status === "running" ? "live" : status}` }, status === "running" ? "live" : status);
}

function setNav(runId, active) {
  const links = { overview: `#/runs/${runId}`, gallery: `#/runs/${runId}/gallery`, review: `#/runs/${runId}/review` };
  for (const [name, href] of Object.entries(links)) {
    const link = document.getElementById(`nav-${name}`);
    link.setAttribute("href", href);
    if (name === active) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
}

function listen(runId, onChange) {
  if (events && currentRun === runId) { events.onchange = onChange; return; }
  if (events) events.close();
  events = new EventSource(api.eventsUrl(runId));
  events.onchange = onChange;
  let last = null;
  events.addEventListener("run", (message) => {
    if (message.data === last) return;
    const first = last === null;
    last = message.data;
    if (!first && events.onchange) events.onchange(JSON.parse(message.data));
  });
}

async function route() {
  keyHandler = null;
  const [path, queryString] = location.hash.replace(/^#/, "").split("?");
  const query = new URLSearchParams(queryString ?? "");
  const parts = path.split("/").filter(Boolean);
  const runs = await api.runs();
  runSelect.replaceChildren(...runs.map((r) => el("option", { value: r.id }, `${r.name} (${r.status})`)));
  if (!runs.length) {
    main.replaceChildren(el("p", { class: "notice" }, "No runs recorded yet. Start one with `datasetq demo` or a Recorder."));
    return;
  }
  // A run that never recorded an epoch (a demo that could not start) is not the default view.
  const runId = parts[0] === "runs" ? Number(parts[1]) : (runs.find((r) => r.epochs > 0) ?? runs[0]).id;
  runSelect.value = String(runId);
  summary = await api.run(runId);
  statusBox.replaceChildren(pill(summary.status), `${summary.epochs} epochs`);
  const page = parts[2] ?? "overview";
  setNav(runId, page === "samples" ? "gallery" : page);
  if (page === "overview") {
    renderOverview(main, runId, summary);
    listen(runId, async () => { summary = await api.run(runId); renderOverview(main, runId, summary); say(`updated: ${summary.epochs} epochs`); });
  } else if (page === "gallery") {
    await renderGallery(main, runId, summary, query);
    listen(runId, null);
  } else if (page === "review") {
    await renderReview(main, runId, summary, query, (handler) => { keyHandler = handler; }, say);
    listen(runId, null);
  } else if (page === "samples") {
    const sampleId = Number(parts[3]);
    const sort = query.get("sort") ?? "loss";
    let detail = await api.sample(runId, sampleId, sort);
    const refresh = async () => { detail = await api.sample(runId, sampleId, sort); draw(); };
    const actions = await sampleActions(runId, sampleId, refresh, say);
    const draw = () => {
      renderSample(main, runId, detail, actions);
      main.prepend(el("p", {},
        detail.previous_id !== null ? el("a", { href: `#/runs/${runId}/samples/${detail.previous_id}?sort=${sort}`, id: "previous" }, "← previous") : null, " ",
        detail.next_id !== null ? el("a", { href: `#/runs/${runId}/samples/${detail.next_id}?sort=${sort}`, id: "next" }, "next →") : null));
    };
    draw();
    keyHandler = (key) => {
      if ((key === "ArrowRight" || key === "j") && detail.next_id !== null) location.hash = `#/runs/${runId}/samples/${detail.next_id}?sort=${sort}`;
      else if ((key === "ArrowLeft" || key === "k") && detail.previous_id !== null) location.hash = `#/runs/${runId}/samples/${detail.previous_id}?sort=${sort}`;
      else if (/^[0-9]$/.test(key) && Number(key) < detail.class_names.length) actions.relabel(Number(key));
      else if (key === "f") actions.flag(!detail.flagged, document.getElementById("flag-reason")?.value);
      else if (key === "x") actions.drop();
      else if (key === "v") actions.keep();
      else if (key === "u") actions.undo();
    };
    listen(runId, null);
  }
}

document.addEventListener("keydown", (event) => {
  if (event.target.closest("input, textarea, select") || event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.key === "?") { help.showModal(); event.preventDefault(); return; }
  if (keyHandler && keyHandler(event.key) !== false) {
    if (["ArrowLeft", "ArrowRight"].includes(event.key)) event.preventDefault();
  }
});
document.getElementById("help-button").addEventListener("click", () => help.showModal());
runSelect.addEventListener("change", () => { location.hash = `#/runs/${runSelect.value}`; });
window.addEventListener("hashchange", () => route().catch((error) => say(error.message, true)));
window.addEventListener("resize", () => { if (summary && document.getElementById("loss-chart")) drawCharts(summary); });
route().catch((error) => say(error.message, true));

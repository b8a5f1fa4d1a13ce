import { ApiError, api } from "./api.js";
import { el } from "./dom.js";
import { apiParams, listFrom, listQuery } from "./list.js";
import { drawCharts, renderOverview } from "./overview.js";
import { renderGallery } from "./gallery.js";
import { renderReview } from "./review.js";
import { neighbourLinks, renderSample, sampleActions, sampleKeys } from "./sample.js";

const main = document.getElementById("main");
const runSelect = document.getElementById("run-select");
const statusBox = document.getElementById("run-status");
const help = document.getElementById("help");
history.scrollRestoration = "manual"; // the gallery puts Back where it was itself
let keyHandler = null;
let events = null;
let eventsRun = null;
let onRunChange = null; // what the open view does when its run records, evicts or ends
let closeView = null;
let summary = null;
let runs = [];
let routing = 0;

function say(message, isError = false) {
  statusBox.replaceChildren(pill(summary?.status), summary ? `${summary.epochs} epochs · ` : "",
    el("span", { class: isError ? "error" : "", id: "status-message" }, message));
}

function pill(status) {
  if (!status) return "";
  return el("span", { class: `pill ${status === "running" ? "live" : status}`, id: "run-pill" }, status === "running" ? "live" : status);
}

function showStatus() {
  statusBox.replaceChildren(pill(summary.status), `${summary.epochs} epochs`, summary.status === "finished" ? " · run finished" : "");
}

function setNav(runId, active, query = "") {
  const links = { overview: `#/runs/${runId}`, gallery: `#/runs/${runId}/gallery${query}`, review: `#/runs/${runId}/review${query}` };
  for (const [name, href] of Object.entries(links)) {
    const link = document.getElementById(`nav-${name}`);
    link.setAttribute("href", href);
    if (name === active) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
}

function fillRunPicker(selected) {
  const label = (r) => `${r.name} (${r.status === "running" ? "live" : r.status})`;
  runSelect.replaceChildren(...runs.map((r) => el("option", { value: r.id, selected: r.id === selected }, label(r))));
  runSelect.value = String(selected);
}

// One event stream, for the run on screen: new epochs, evictions, status, and new runs.
function listen(runId) {
  if (events && eventsRun === runId) return;
  if (events) events.close();
  eventsRun = runId;
  events = new EventSource(api.eventsUrl(runId));
  let last = null;
  events.addEventListener("run", (message) => {
    if (message.data === last) return;
    const first = last === null;
    last = message.data;
    if (!first) runChanged(runId).catch((error) => say(error.message, true));
  });
}

async function runChanged(runId) {
  [runs, summary] = await Promise.all([api.runs(), api.run(runId)]);
  fillRunPicker(runId);
  showStatus();
  if (onRunChange) await onRunChange();
}

function errorPage(title, message, back) {
  main.replaceChildren(el("section", { class: "card error-page", id: "error-page" },
    el("h1", {}, title), el("p", {}, message), el("p", {}, el("a", { href: back.href, id: "error-back" }, back.text))));
}

async function route() {
  const mine = ++routing;
  keyHandler = null;
  onRunChange = null;
  if (closeView) { closeView(); closeView = null; }
  const [path, queryString] = location.hash.replace(/^#/, "").split("?");
  const query = new URLSearchParams(queryString ?? "");
  const parts = path.split("/").filter(Boolean);
  runs = await api.runs();
  if (mine !== routing) return;
  if (!runs.length) {
    runSelect.replaceChildren();
    main.replaceChildren(el("p", { class: "notice" }, "No runs recorded yet. Start one with `datasetq demo` or a Recorder; it appears here by itself."));
    setTimeout(() => { if (mine === routing) route(); }, 3000);
    return;
  }
  const fallback = (runs.find((r) => r.epochs > 0) ?? runs[0]).id;
  const home = { href: "#/", text: "← Back to the overview" };
  if (parts.length && (parts[0] !== "runs" || !/^\d+$/.test(parts[1] ?? ""))) {
    return errorPage("No such page", `There is no page at “${location.hash}”.`, home);
  }
  const runId = parts.length ? Number(parts[1]) : fallback;
  if (!runs.some((r) => r.id === runId)) {
    fillRunPicker(fallback);
    return errorPage("No such run", `There is no run ${runId} in this store. The store holds ${runs.length} run${runs.length === 1 ? "" : "s"}.`, home);
  }
  fillRunPicker(runId);
  summary = await api.run(runId);
  if (mine !== routing) return;
  showStatus();
  const page = parts[2] ?? "overview";
  const list = listFrom(query);
  const listPart = `?${listQuery(list)}`;
  setNav(runId, page === "samples" ? "gallery" : page, listPart === "?" ? "" : listPart);
  listen(runId);
  const overviewHome = { href: `#/runs/${runId}`, text: "← Back to this run's overview" };
  if (page === "overview" && parts.length <= 2) {
    const confusion = await api.confusion(runId).catch(() => null);
    renderOverview(main, runId, summary, confusion);
    onRunChange = async () => {
      const fresh = await api.confusion(runId).catch(() => null);
      const scroll = window.scrollY;
      renderOverview(main, runId, summary, fresh);
      window.scrollTo(0, scroll);
    };
  } else if (page === "gallery" && parts.length === 3) {
    const view = await renderGallery(main, runId, summary, query, say);
    onRunChange = view.refresh;
    closeView = view.close;
  } else if (page === "review" && parts.length === 3) {
    const view = await renderReview(main, runId, summary, query, (handler) => { keyHandler = handler; }, say);
    if (view) onRunChange = view.refresh;
  } else if (page === "samples" && /^\d+$/.test(parts[3] ?? "") && parts.length === 4) {
    await showSample(runId, Number(parts[3]), list);
  } else {
    errorPage("No such page", `There is no page at “${location.hash}”.`, overviewHome);
  }
}

async function showSample(runId, sampleId, list) {
  const params = apiParams(list);
  const hrefOf = (id) => `#/runs/${runId}/samples/${id}?${listQuery(list)}`;
  const back = { href: `#/runs/${runId}/gallery?${listQuery(list)}`, text: "← Back to the gallery" };
  if (sampleId >= summary.num_samples) {
    return errorPage("No such sample", `Run ${summary.name} has samples 0 to ${(summary.num_samples - 1).toLocaleString()}; there is no sample ${sampleId}.`, back);
  }
  let detail;
  try {
    detail = await api.sample(runId, sampleId, params);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      return errorPage("No such sample", error.message, back);
    }
    throw error;
  }
  const refresh = async () => { detail = await api.sample(runId, sampleId, params); draw(); };
  const actions = sampleActions(runId, sampleId, refresh, say);
  const draw = () => renderSample(main, runId, detail, actions, { epochs: summary.epochs, nav: neighbourLinks(detail, hrefOf) });
  draw();
  onRunChange = refresh;
  keyHandler = sampleKeys(() => detail, actions, hrefOf);
}

function failed(error) {
  if (error instanceof ApiError && error.status === 404) {
    errorPage("Not found", error.message, { href: "#/", text: "← Back to the overview" });
  } else {
    say(error.message, true);
  }
}

document.addEventListener("keydown", (event) => {
  if (event.target.closest("input, textarea, select, dialog") || event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.key === "?") { help.showModal(); event.preventDefault(); return; }
  if (keyHandler && keyHandler(event.key) !== false) {
    if (["ArrowLeft", "ArrowRight"].includes(event.key)) event.preventDefault();
  }
});
document.getElementById("help-button").addEventListener("click", () => help.showModal());
runSelect.addEventListener("change", () => { location.hash = `#/runs/${runSelect.value}`; });
document.getElementById("goto-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = document.getElementById("goto-id").value.trim();
  const runId = eventsRun ?? Number(runSelect.value);
  if (!/^\d+$/.test(value)) { say(`“${value}” is not a sample id (a whole number)`, true); return; }
  location.hash = `#/runs/${runId}/samples/${value}`;
});
window.addEventListener("hashchange", () => route().catch(failed));
window.addEventListener("resize", () => {
  if (summary && document.getElementById("loss-chart")) drawCharts(summary);
});
route().catch(failed);

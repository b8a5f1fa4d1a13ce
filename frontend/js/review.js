import { api, VIEWS } from "./api.js";
import { el } from "./dom.js";
import { renderSample, sampleActions } from "./sample.js";

// Review mode: one sample at a time from a gallery view, driven by the keyboard.
export async function renderReview(main, runId, summary, query, setKeys, say) {
  const view = VIEWS[query.get("view")] ? query.get("view") : "hardest";
  const params = { ...VIEWS[view].params, limit: 200 };
  if (query.get("label")) params.label = query.get("label");
  let page = await api.samples(runId, params);
  const items = [...page.items];
  let total = page.total;
  let position = 0;
  const reviewed = new Set();
  const progress = el("p", { class: "progress", id: "review-progress", role: "status", "aria-live": "polite" });
  const body = el("div", { id: "review-body" });
  main.replaceChildren(el("div", { class: "toolbar" },
    el("strong", {}, `Review: ${VIEWS[view].title}`), progress,
    el("span", { class: "notice" }, "← / k previous · → / j next · 0–9 relabel · v keep · x drop · f flag · u undo · ? help")), body);
  if (!items.length) {
    body.append(el("p", { class: "notice" }, "Nothing to review in this view yet."));
    return;
  }
  let actions = null;
  let detail = null;
  const show = async () => {
    const item = items[position];
    reviewed.add(item.sample_id);
    detail = await api.sample(runId, item.sample_id, params.sort);
    const refresh = async () => { detail = await api.sample(runId, item.sample_id, params.sort); draw(); };
    actions = await sampleActions(runId, item.sample_id, refresh, say);
    draw();
  };
  const draw = () => {
    renderSample(body, runId, detail, actions, `Sample ${detail.sample_id} (${position + 1} in this view)`);
    progress.textContent = `${reviewed.size} of ${total.toLocaleString()} reviewed`;
  };
  const move = async (step) => {
    const next = position + step;
    if (next < 0) return;
    if (next >= items.length && page.next_cursor) {
      page = await api.samples(runId, { ...params, cursor: page.next_cursor });
      items.push(...page.items);
      total = page.total;
    }
    if (next >= items.length) { say("End of this view"); return; }
    position = next;
    await show();
  };
  setKeys((key) => {
    if (key === "ArrowRight" || key === "j") return move(1);
    if (key === "ArrowLeft" || key === "k") return move(-1);
    if (/^[0-9]$/.test(key) && Number(key) < summary.class_names.length) return actions.relabel(Number(key));
    if (key === "f") return actions.flag(!detail.flagged, document.getElementById("flag-reason")?.value);
    if (key === "x") return actions.drop();
    if (key === "v") return actions.keep();
    if (key === "u") return actions.undo();
    return undefined;
  });
  await show();
}

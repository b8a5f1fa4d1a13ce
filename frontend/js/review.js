import { api } from "./api.js";
import { el, replaceHash } from "./dom.js";
import { apiParams, describe, listFrom, listQuery } from "./list.js";
import { neighbourLinks, renderSample, sampleActions, sampleKeys } from "./sample.js";

/** Review mode: one sample at a time from a list, driven by the keyboard; a decision
 *  advances to the next sample. Its place (the sample) is in the URL; its progress counts
 *  decisions in the store, so a reload resumes both. */
export async function renderReview(main, runId, summary, query, setKeys, say) {
  const list = listFrom(query);
  const params = apiParams(list);
  const hrefOf = (sampleId) => `#/runs/${runId}/review?${listQuery(list, { sample: sampleId })}`;
  const title = `Review: ${describe(list, summary.class_names)}`;
  let sampleId = /^\d+$/.test(query.get("sample") ?? "") ? Number(query.get("sample")) : null;
  if (sampleId === null) {
    const entered = location.hash;
    const first = await api.samples(runId, { ...params, limit: 1 });
    if (location.hash !== entered) return null; // moved on while this list was asked for
    if (!first.items.length) {
      main.replaceChildren(el("h1", {}, title), el("p", { class: "notice" }, "Nothing to review in this list yet. ",
        el("a", { href: `#/runs/${runId}/gallery?${listQuery(list)}` }, "Back to the gallery")));
      return null;
    }
    sampleId = first.items[0].sample_id;
    history.replaceState(history.state, "", hrefOf(sampleId));
  }
  // A decision that returns after the person has moved on must not move them back.
  const address = location.hash;
  const moveTo = (hash) => { if (location.hash === address) replaceHash(hash); };
  const progress = el("p", { class: "progress", id: "review-progress", role: "status", "aria-live": "polite" });
  const body = el("div", { id: "review-body" });
  main.replaceChildren(el("div", { class: "toolbar review-bar" },
    el("strong", {}, title), progress,
    el("a", { href: `#/runs/${runId}/gallery?${listQuery(list)}`, id: "back-to-gallery" }, "gallery of this list"),
    el("span", { class: "notice" }, "j / → next · k / ← previous · 0–9 relabel · v keep · x drop · f flag · u undo · ? help")), body);

  let detail = null;
  const countProgress = async () => {
    const [all, decided] = await Promise.all([
      api.samples(runId, { ...params, limit: 1 }),
      api.samples(runId, { ...params, reviewed: "true", limit: 1 }),
    ]);
    progress.textContent = `${decided.total.toLocaleString()} of ${all.total.toLocaleString()} decided`;
  };
  const draw = () => renderSample(body, runId, detail, actions, {
    heading: `Sample ${detail.sample_id}`, epochs: summary.epochs, nav: neighbourLinks(detail, hrefOf),
  });
  const refresh = async () => { detail = await api.sample(runId, sampleId, params); draw(); await countProgress(); };
  const advance = async () => {
    if (detail.next_id !== null) moveTo(hrefOf(detail.next_id));
    else { await refresh(); say("That was the last sample of this list"); }
  };
  const decided = async () => { detail = await api.sample(runId, sampleId, params); await advance(); };
  const actions = sampleActions(runId, sampleId, refresh, say, decided);
  // Undo goes back to the sample it changed (a decision moved review on from it).
  actions.undo = async () => {
    try {
      const result = await api.undoLatest(runId);
      say(result.message);
      const changed = result.undo?.sample_ids ?? [];
      if (changed.length === 1 && changed[0] !== sampleId) moveTo(hrefOf(changed[0]));
      else await refresh();
    } catch (error) {
      say(error.message, true);
    }
  };
  detail = await api.sample(runId, sampleId, params);
  draw();
  await countProgress();
  setKeys(sampleKeys(() => detail, actions, hrefOf));
  return { refresh: countProgress };
}

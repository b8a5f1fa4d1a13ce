import { api } from "./api.js";
import { decisions } from "./decisions.js";
import { clear, el, fmt } from "./dom.js";
import { SORTS, VIEWS, apiParams, describe, listFrom, listQuery } from "./list.js";

const PAGE = 60;
const MAX_PAGE = 1000; // the API's largest page
const MAX_SELECTION = 10000; // the most samples one review action takes

// Where the gallery of a list was left (loaded tiles, first visible tile, selection), per tab.
const placeKey = (runId, list) => `datasetq-gallery:${runId}:${listQuery(list)}`;
const readPlace = (key) => { try { return JSON.parse(sessionStorage.getItem(key)) ?? {}; } catch { return {}; } };

function tile(runId, item, classNames, list, selected) {
  const name = (i) => classNames[i] ?? String(i);
  // "7 - seven" is "7" on a tile: the badges stay one line each.
  const short = (i) => (name(i).startsWith(`${i} `) ? String(i) : name(i));
  const label = name(item.label);
  const href = `#/runs/${runId}/samples/${item.sample_id}?${listQuery(list)}`;
  const predicted = item.last_pred !== null;
  const wrong = predicted && item.last_pred !== item.label;
  return el("div", { class: `tile${selected ? " selected" : ""}`, "data-sample": item.sample_id },
    el("input", { type: "checkbox", class: "pick", checked: selected, "aria-label": `Select sample ${item.sample_id}` }),
    el("a", { href, class: "open" },
      el("img", { src: api.imageUrl(runId, item.sample_id, 96), alt: `Sample ${item.sample_id}, labelled ${label}`, loading: "lazy", width: 96, height: 96 })),
    el("div", { class: "badges" },
      el("span", { class: "badge", title: `label: ${label}` }, `label ${short(item.label)}`),
      predicted ? el("span", {
        class: `badge pred${wrong ? " wrong" : ""}`,
        title: "latest prediction; margin: the label's logit minus the largest other (below 0: the model prefers another class)",
      }, `pred ${short(item.last_pred)}${item.last_margin !== null ? ` · m ${fmt(item.last_margin, 1)}` : ""}`) : null,
      el("span", { class: "badge", title: "latest loss" }, `loss ${fmt(item.last_loss, 2)}`),
      el("span", { class: "badge", title: "visits" }, `${item.visits}×`),
      item.evicted_epoch !== null ? el("span", { class: "badge evicted" }, `evicted e${item.evicted_epoch}`) : null,
      item.flagged ? el("span", { class: "badge flagged" }, "flagged") : null,
      item.relabeled ? el("span", { class: "badge relabeled" }, "relabelled") : null,
      item.verdict === "drop" ? el("span", { class: "badge drop" }, "dropped") : null,
      item.verdict === "keep" && !item.relabeled ? el("span", { class: "badge keep" }, "kept") : null,
    ),
  );
}

function filterSelect(id, label, names, value, anyText) {
  return el("label", {}, label, el("select", { id },
    el("option", { value: "" }, anyText),
    names.map((name, i) => el("option", { value: i, selected: String(i) === value }, name))));
}

/** The gallery of one list: tiles, selection and decisions on many samples at once.
 * Returns a handle whose `refresh()` reloads what is shown (the live stream calls it). */
export async function renderGallery(main, runId, summary, query, say) {
  const list = listFrom(query);
  const names = summary.class_names;
  const params = apiParams(list);
  const key = placeKey(runId, list);
  const place = readPlace(key);
  clear(main);
  main.append(el("h1", {}, `Gallery: ${describe(list, names)}`));

  const viewSelect = el("label", {}, "View", el("select", { id: "view-select" },
    Object.entries(VIEWS).map(([k, v]) => el("option", { value: k, selected: k === list.view }, v.title))));
  const sortSelect = el("label", {}, "Sort", el("select", { id: "sort-select" },
    el("option", { value: "" }, `view's own (${SORTS[VIEWS[list.view].params.sort]})`),
    Object.entries(SORTS).map(([k, v]) => el("option", { value: k, selected: k === list.sort }, v))));
  const classSelect = filterSelect("class-select", "Label", names, list.label, "all labels");
  const predSelect = filterSelect("pred-select", "Predicted", names, list.pred, "any prediction");
  const go = () => {
    const next = {
      view: main.querySelector("#view-select").value,
      sort: main.querySelector("#sort-select").value,
      order: "",
      label: main.querySelector("#class-select").value,
      pred: main.querySelector("#pred-select").value,
    };
    location.hash = `#/runs/${runId}/gallery?${listQuery(next)}`;
  };
  for (const control of [viewSelect, sortSelect, classSelect, predSelect]) control.querySelector("select").addEventListener("change", go);
  const count = el("span", { class: "notice", id: "gallery-count", role: "status" });
  main.append(el("div", { class: "toolbar" }, viewSelect, classSelect, predSelect, sortSelect,
    el("a", { href: `#/runs/${runId}/review?${listQuery(list)}`, id: "start-review" }, "Review these one by one →"),
    count));

  // ---- selection and the actions on it
  const selection = new Set(place.selection ?? []);
  let anchor = null; // the tile a shift-click extends from
  const selectedCount = el("strong", { id: "selected-count" });
  const bulkLabel = el("select", { id: "bulk-label", "aria-label": "New label for the selected samples" },
    names.map((name, i) => el("option", { value: i }, name)));
  const actionButtons = [
    el("button", { type: "button", id: "bulk-relabel" }, "Relabel"),
    el("button", { type: "button", id: "bulk-keep" }, "Keep"),
    el("button", { type: "button", id: "bulk-drop" }, "Drop"),
    el("button", { type: "button", id: "bulk-flag" }, "Flag"),
    el("button", { type: "button", id: "select-none" }, "Clear selection"),
  ];
  const selectAll = el("button", { type: "button", id: "select-all" }, "Select all in this view");
  const bulk = el("section", { class: "bulk", id: "bulk", "aria-label": "Selected samples" },
    selectAll, selectedCount, el("label", { class: "inline" }, "as ", bulkLabel), ...actionButtons,
    el("span", { class: "notice hint" }, "click a tile's box to select it, shift-click to select a range"));
  const lastAction = el("p", { id: "last-action", class: "notice", role: "status", "aria-live": "polite" });
  main.append(bulk, lastAction);

  const grid = el("div", { class: "grid", id: "gallery-grid" });
  const more = el("button", { class: "more", type: "button", id: "load-more", hidden: true }, "Load more");
  const empty = el("p", { class: "notice", id: "gallery-empty", hidden: true }, "No samples in this view yet. It fills as the run records.");
  main.append(grid, empty, more);

  let items = [];
  let cursor = null;
  let total = 0;

  const remember = () => {
    // A page load that ends after the person has moved on must not take the address back.
    if (!grid.isConnected || !location.hash.startsWith(`#/runs/${runId}/gallery`)) return;
    const first = firstVisible();
    sessionStorage.setItem(key, JSON.stringify({
      loaded: items.length,
      first: first?.id ?? null,
      offset: first?.offset ?? 0,
      selection: selection.size <= 2000 ? [...selection] : [],
    }));
    const url = new URL(location.href);
    const hashQuery = new URLSearchParams(location.hash.split("?")[1] ?? "");
    if (items.length > PAGE) hashQuery.set("shown", items.length); else hashQuery.delete("shown");
    url.hash = `#/runs/${runId}/gallery?${hashQuery}`;
    if (url.href !== location.href) history.replaceState(history.state, "", url.href);
  };
  const firstVisible = () => {
    for (const node of grid.children) {
      const box = node.getBoundingClientRect();
      if (box.bottom > 0) return { id: Number(node.dataset.sample), offset: box.top };
    }
    return null;
  };

  const showSelection = () => {
    selectedCount.textContent = `${selection.size.toLocaleString()} selected`;
    for (const button of actionButtons) button.disabled = selection.size === 0;
    bulkLabel.disabled = selection.size === 0;
    for (const node of grid.children) {
      const on = selection.has(Number(node.dataset.sample));
      node.classList.toggle("selected", on);
      const box = node.querySelector(".pick");
      if (box) box.checked = on;
    }
  };
  const draw = () => {
    grid.replaceChildren(...items.map((item) => tile(runId, item, names, list, selection.has(item.sample_id))));
    count.textContent = `${items.length.toLocaleString()} of ${total.toLocaleString()} shown`;
    more.hidden = !cursor;
    empty.hidden = total > 0;
    selectAll.textContent = `Select all ${Math.min(total, MAX_SELECTION).toLocaleString()} in this view`;
    selectAll.disabled = total === 0;
    showSelection();
  };
  const fetchPage = (after, limit) => api.samples(runId, after ? { ...params, limit, cursor: after } : { ...params, limit });
  const load = async (atLeast = items.length + PAGE) => {
    more.disabled = true;
    try {
      while (items.length < atLeast && (cursor || items.length === 0)) {
        const page = await fetchPage(cursor, Math.min(MAX_PAGE, Math.max(PAGE, atLeast - items.length)));
        items.push(...page.items);
        cursor = page.next_cursor;
        total = page.total;
        if (!page.items.length) break;
      }
    } finally {
      more.disabled = false;
    }
    draw();
    remember();
  };
  // Reloads what is shown (new evictions, decisions), keeping the first visible tile in place.
  const refresh = async () => {
    const keep = firstVisible();
    const wanted = Math.max(items.length, PAGE);
    items = [];
    cursor = null;
    await load(wanted);
    if (keep) scrollToTile(keep.id, keep.offset);
  };
  const scrollToTile = (sampleId, offset) => {
    const node = grid.querySelector(`[data-sample="${sampleId}"]`);
    if (node) window.scrollBy(0, node.getBoundingClientRect().top - offset);
  };

  grid.addEventListener("click", (event) => {
    const node = event.target.closest(".tile");
    if (!node) return;
    const index = [...grid.children].indexOf(node);
    const box = event.target.closest(".pick");
    if (!box && !event.shiftKey) { remember(); return; } // opens the sample
    if (event.shiftKey) event.preventDefault();
    const sampleId = Number(node.dataset.sample);
    const on = box ? box.checked : !selection.has(sampleId);
    if (event.shiftKey && anchor !== null) {
      const [from, to] = anchor < index ? [anchor, index] : [index, anchor];
      for (const item of items.slice(from, to + 1)) on ? selection.add(item.sample_id) : selection.delete(item.sample_id);
    } else if (on) selection.add(sampleId); else selection.delete(sampleId);
    anchor = index;
    showSelection();
    remember();
  });
  selectAll.addEventListener("click", async () => {
    selectAll.disabled = true;
    try {
      await load(Math.min(total, MAX_SELECTION));
      for (const item of items.slice(0, MAX_SELECTION)) selection.add(item.sample_id);
      if (total > MAX_SELECTION) say(`Selected the first ${MAX_SELECTION.toLocaleString()}: one action takes at most that many`);
      showSelection();
      remember();
    } finally {
      selectAll.disabled = false;
    }
  });

  const act = decisions(runId, names, say, async (message, action) => {
    selection.clear();
    anchor = null;
    lastAction.replaceChildren(message, " ",
      el("button", { type: "button", id: "bulk-undo", onclick: async (event) => {
        event.target.disabled = true;
        const result = await act.undo(action);
        if (result) lastAction.replaceChildren(result);
      } }, "Undo this action"));
    await refresh();
  }, refresh);
  const chosen = () => [...selection];
  actionButtons[0].addEventListener("click", () => act.many("relabel", chosen(), { label: Number(bulkLabel.value) }));
  actionButtons[1].addEventListener("click", () => act.many("keep", chosen()));
  actionButtons[2].addEventListener("click", () => act.many("drop", chosen()));
  actionButtons[3].addEventListener("click", () => act.many("flag", chosen()));
  actionButtons[4].addEventListener("click", () => { selection.clear(); anchor = null; showSelection(); remember(); });
  more.addEventListener("click", () => load());

  let pending = false;
  const onScroll = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; if (grid.isConnected) remember(); });
  };
  window.addEventListener("scroll", onScroll, { passive: true });
  // Keeps loading as the end of the grid scrolls into view: tens of thousands, page by page.
  const observer = new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && cursor && !more.disabled) load();
  });
  observer.observe(more);

  const shown = Number(query.get("shown")) || 0;
  await load(Math.min(Math.max(PAGE, shown, place.loaded ?? 0), MAX_SELECTION));
  if (place.first !== undefined && place.first !== null) scrollToTile(place.first, place.offset ?? 0);
  return {
    refresh,
    close: () => { observer.disconnect(); window.removeEventListener("scroll", onScroll); },
  };
}

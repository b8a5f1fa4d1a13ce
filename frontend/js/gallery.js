import { api, VIEWS } from "./api.js";
import { clear, el, fmt } from "./dom.js";

const PAGE = 60;

function tile(runId, item, classNames, view) {
  const label = classNames[item.label] ?? String(item.label);
  return el("a", { class: "tile", href: `#/runs/${runId}/samples/${item.sample_id}?view=${view}`, "data-sample": item.sample_id },
    el("img", { src: api.imageUrl(runId, item.sample_id, 96), alt: `Sample ${item.sample_id}, labelled ${label}`, loading: "lazy", width: 96, height: 96 }),
    el("div", { class: "badges" },
      el("span", { class: "badge", title: "label" }, label),
      el("span", { class: "badge", title: "latest loss" }, `loss ${fmt(item.last_loss, 2)}`),
      el("span", { class: "badge", title: "visits" }, `${item.visits}×`),
      item.evicted_epoch !== null ? el("span", { class: "badge evicted" }, `evicted e${item.evicted_epoch}`) : null,
      item.flagged ? el("span", { class: "badge flagged" }, "flagged") : null,
      item.relabeled ? el("span", { class: "badge relabeled" }, "relabelled") : null,
    ),
  );
}

export async function renderGallery(main, runId, summary, query) {
  const view = VIEWS[query.get("view")] ? query.get("view") : "hardest";
  const label = query.get("label") ?? "";
  clear(main);
  main.append(el("h1", {}, `Gallery: ${VIEWS[view].title}`));
  const viewSelect = el("select", { id: "view-select" },
    Object.entries(VIEWS).map(([key, v]) => el("option", { value: key, selected: key === view }, v.title)));
  const classSelect = el("select", { id: "class-select" },
    el("option", { value: "" }, "all classes"),
    summary.class_names.map((name, i) => el("option", { value: i, selected: String(i) === label }, name)));
  const go = () => { location.hash = `#/runs/${runId}/gallery?view=${viewSelect.value}${classSelect.value ? `&label=${classSelect.value}` : ""}`; };
  viewSelect.addEventListener("change", go);
  classSelect.addEventListener("change", go);
  const count = el("span", { class: "notice", id: "gallery-count", role: "status" });
  main.append(el("div", { class: "toolbar" },
    el("label", {}, "View", viewSelect),
    el("label", {}, "Class", classSelect),
    el("a", { href: `#/runs/${runId}/review?view=${view}${label ? `&label=${label}` : ""}`, id: "start-review" }, "Review these with the keyboard →"),
    count,
  ));
  const grid = el("div", { class: "grid", id: "gallery-grid" });
  const more = el("button", { class: "more", type: "button", id: "load-more" }, "Load more");
  main.append(grid, more);
  const params = { ...VIEWS[view].params, limit: PAGE };
  if (label !== "") params.label = label;
  let cursor = null;
  let shown = 0;
  const load = async () => {
    more.disabled = true;
    const page = await api.samples(runId, cursor ? { ...params, cursor } : params);
    for (const item of page.items) grid.append(tile(runId, item, summary.class_names, view));
    shown += page.items.length;
    cursor = page.next_cursor;
    count.textContent = `${shown.toLocaleString()} of ${page.total.toLocaleString()} shown`;
    more.hidden = !cursor;
    more.disabled = false;
    if (!page.total) grid.append(el("p", { class: "notice" }, "No samples in this view yet."));
  };
  more.addEventListener("click", load);
  // Keeps loading as the end of the grid scrolls into view: tens of thousands, page by page.
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && cursor && !more.disabled) load();
  }).observe(more);
  await load();
}

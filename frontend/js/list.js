// A list of samples as the URL names it: a view, its filters and its sort.
// The same list drives the gallery, review mode and previous / next on a sample.

// The first is the default: what the tool is for, the samples most likely mislabeled.
export const VIEWS = {
  score: { title: "Most suspicious", params: { sort: "score", order: "desc" } },
  hardest: { title: "Hardest (latest loss)", params: { sort: "loss", order: "desc" } },
  visited: { title: "Most visited", params: { sort: "visits", order: "desc" } },
  evicted: { title: "Evicted", params: { sort: "evicted_epoch", order: "asc", evicted: "true" } },
  flagged: { title: "Flagged", params: { sort: "loss", order: "desc", flagged: "true" } },
  relabeled: { title: "Relabelled", params: { sort: "loss", order: "desc", relabeled: "true" } },
  mispredicted: { title: "Predicted ≠ label", params: { sort: "loss", order: "desc", mispredicted: "true" } },
  undecided: { title: "Not yet decided", params: { sort: "score", order: "desc", reviewed: "false" } },
};

export const SORTS = {
  loss: "latest loss",
  score: "suspicion",
  mean_loss: "mean loss",
  max_loss: "largest loss",
  visits: "visits",
  evicted_epoch: "epoch evicted",
};

const KEYS = ["view", "label", "pred", "sort", "order"];

/** The list a URL query names; unknown values fall back to the defaults. */
export function listFrom(query) {
  const view = VIEWS[query.get("view")] ? query.get("view") : "score";
  const whole = (name) => (/^\d+$/.test(query.get(name) ?? "") ? query.get(name) : "");
  const sort = SORTS[query.get("sort")] ? query.get("sort") : "";
  const order = ["asc", "desc"].includes(query.get("order")) ? query.get("order") : "";
  return { view, label: whole("label"), pred: whole("pred"), sort, order };
}

/** The list's parameters for the API's sample routes. */
export function apiParams(list) {
  const params = { ...VIEWS[list.view].params };
  if (list.sort) params.sort = list.sort;
  if (list.order) params.order = list.order;
  if (list.label !== "") params.label = list.label;
  if (list.pred !== "") params.pred = list.pred;
  return params;
}

/** The list as a URL query (what links between views carry). */
export function listQuery(list, extra = {}) {
  const query = new URLSearchParams();
  for (const key of KEYS) if (list[key]) query.set(key, list[key]);
  for (const [key, value] of Object.entries(extra)) if (value !== null && value !== undefined && value !== "") query.set(key, value);
  return query.toString();
}

/** "Evicted · label 3 · predicted 5" */
export function describe(list, classNames) {
  const name = (i) => classNames[Number(i)] ?? i;
  return [
    VIEWS[list.view].title,
    list.label !== "" ? `label ${name(list.label)}` : null,
    list.pred !== "" ? `predicted ${name(list.pred)}` : null,
    list.sort ? `by ${SORTS[list.sort]}${list.order === "asc" ? " (ascending)" : ""}` : null,
  ].filter(Boolean).join(" · ");
}

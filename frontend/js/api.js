// The API client: JSON in, JSON out; errors carry the server's message.
const BASE = "/api/v1";

async function send(method, path, body) {
  const options = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token && method !== "GET") options.headers.Authorization = `Bearer ${token}`;
  return fetch(BASE + path, options);
}

async function request(method, path, body) {
  let response = await send(method, path, body);
  // A write the server refuses for want of its token: ask for it (kept for this tab), retry.
  for (let attempt = 0; response.status === 401 && method !== "GET" && attempt < 3; attempt++) {
    const token = await askForToken(attempt > 0 || sessionStorage.getItem(TOKEN_KEY) !== null);
    if (token === null) break;
    sessionStorage.setItem(TOKEN_KEY, token);
    response = await send(method, path, body);
  }
  if (!response.ok) {
    let detail = response.statusText || `the server answered ${response.status}`;
    try { detail = (await response.json()).detail ?? detail; } catch { /* not JSON */ }
    throw new ApiError(response.status, typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return response.json();
}

// An answer the server refused: `status` for the code, the message is the server's own words.
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const TOKEN_KEY = "datasetq-token";

// The token dialog: resolves to the token typed, or null when cancelled.
function askForToken(wasWrong) {
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  document.getElementById("token-wrong").hidden = !wasWrong;
  input.value = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const token = input.value.trim();
      resolve(dialog.returnValue === "save" && token ? token : null);
    }, { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    input.focus();
  });
}

export const api = {
  runs: () => request("GET", "/runs"),
  run: (runId) => request("GET", `/runs/${runId}`),
  samples: (runId, params) => request("GET", `/runs/${runId}/samples?${new URLSearchParams(params)}`),
  // `list`: the API parameters of the list the sample was opened from (its neighbours).
  sample: (runId, sampleId, list = {}) => request("GET", `/runs/${runId}/samples/${sampleId}?${new URLSearchParams(list)}`),
  confusion: (runId) => request("GET", `/runs/${runId}/confusion`),
  relabel: (runId, sampleId, label, note) => request("POST", `/runs/${runId}/samples/${sampleId}/label`, note ? { label, note } : { label }),
  undo: (runId, sampleId) => request("POST", `/runs/${runId}/samples/${sampleId}/label/undo`, {}),
  flag: (runId, sampleId, flagged, reason) => request("POST", `/runs/${runId}/samples/${sampleId}/flag`, { flagged, reason: reason || null }),
  // One decision (relabel, keep, drop, flag, unflag) on samples: an action of the review log.
  review: (runId, kind, sampleIds, extra = {}) => request("POST", `/runs/${runId}/reviews`, { kind, sample_ids: sampleIds, ...extra }),
  undoLatest: (runId) => request("POST", `/runs/${runId}/reviews/undo`, {}),
  undoAction: (runId, actionId) => request("POST", `/runs/${runId}/reviews/${actionId}/undo`, {}),
  exportCounts: (runId, policy) => request("GET", `/runs/${runId}/export/counts?evicted=${policy}`),
  imageUrl: (runId, sampleId, size = 0) => `${BASE}/runs/${runId}/samples/${sampleId}/image${size ? `?size=${size}` : ""}`,
  exportUrl: (runId, format, policy = "drop") => `${BASE}/runs/${runId}/export?format=${format}&evicted=${policy}`,
  eventsUrl: (runId) => `${BASE}/runs/${runId}/events`,
};


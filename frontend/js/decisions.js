import { api } from "./api.js";

const VERBS = {
  relabel: (n, label) => `Relabel ${n} as ${label}`,
  keep: (n) => `Keep ${n}`,
  drop: (n) => `Drop ${n} from the export`,
  flag: (n) => `Flag ${n}`,
  unflag: (n) => `Unflag ${n}`,
};
const DONE = {
  relabel: (n, label) => `Relabelled ${n} as ${label}.`,
  keep: (n) => `Kept ${n}.`,
  drop: (n) => `Dropped ${n} from the export.`,
  flag: (n) => `Flagged ${n}.`,
  unflag: (n) => `Unflagged ${n}.`,
};

const samplesText = (n) => `${n.toLocaleString()} sample${n === 1 ? "" : "s"}`;

/** Asks to confirm an action on many samples; resolves to true when confirmed. */
function confirmAction(text) {
  const dialog = document.getElementById("confirm-dialog");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    document.getElementById("confirm-ok").focus();
  });
}

/** Decisions on one or many samples, each one review action that one undo takes back.
 *  `done(message, action)` runs after a decision lands; `changed()` after an undo. */
export function decisions(runId, classNames, say, done, changed) {
  const name = (label) => classNames[label] ?? String(label);
  return {
    async many(kind, sampleIds, extra = {}) {
      if (!sampleIds.length) return null;
      const label = extra.label !== undefined ? name(extra.label) : "";
      const n = samplesText(sampleIds.length);
      if (sampleIds.length > 1 && !(await confirmAction(`${VERBS[kind](n, label)}?`))) return null;
      try {
        const action = await api.review(runId, kind, sampleIds, extra);
        const message = DONE[kind](n, label);
        say(message);
        await done(message, action);
        return action;
      } catch (error) {
        say(error.message, true);
        return null;
      }
    },
    // Undoes exactly `action` (all its samples in one step).
    async undo(action) {
      try {
        await api.undoAction(runId, action.id);
        const message = `Undid: ${DONE[action.kind](samplesText(action.samples), action.label !== null ? name(action.label) : "")}`;
        say(message);
        await changed();
        return message;
      } catch (error) {
        say(error.message, true);
        return null;
      }
    },
  };
}

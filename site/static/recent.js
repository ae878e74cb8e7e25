// The visitor's recent results, kept in this browser's localStorage only: a small thumbnail, the
// answer and the prediction's id (which reopens it), newest first, a few per model.
import { isClassification } from "./result.js";
import { formatPercent } from "./messages.js";

const KEY = "modelfolio.recent.v1";
const KEEP = 24; // over all models: thumbnails are ~3 KB each, far below any storage quota
const THUMB_SIDE = 96;

function read() {
  try {
    const entries = JSON.parse(localStorage.getItem(KEY) || "[]");
    return Array.isArray(entries) ? entries.filter((e) => e && typeof e.id === "string") : [];
  } catch {
    return []; // storage blocked (private mode, a policy) or damaged: nothing remembered
  }
}

function write(entries) {
  try {
    localStorage.setItem(KEY, JSON.stringify(entries.slice(0, KEEP)));
    return true;
  } catch {
    return false;
  }
}

export function findRecent(id) {
  return read().find((entry) => entry.id === id) || null;
}

export async function thumbnail(blob) {
  try {
    const bitmap = await createImageBitmap(blob);
    const scale = Math.min(1, THUMB_SIDE / Math.max(bitmap.width, bitmap.height));
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(bitmap.width * scale));
    canvas.height = Math.max(1, Math.round(bitmap.height * scale));
    const context = canvas.getContext("2d");
    context.fillStyle = "#ffffff";
    context.fillRect(0, 0, canvas.width, canvas.height);
    context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    bitmap.close();
    return canvas.toDataURL("image/jpeg", 0.8);
  } catch {
    return null;
  }
}

export function setupRecent(root, model, onOpen) {
  const section = root.querySelector("[data-recent]");
  const list = section.querySelector("[data-recent-list]");
  const clear = section.querySelector("[data-recent-clear]");

  function render() {
    const mine = read().filter((entry) => entry.model === model);
    section.hidden = mine.length === 0;
    list.replaceChildren(...mine.map(item));
  }

  function item(entry) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.testid = "recent-item";
    button.className = "flex w-full flex-col items-center gap-1.5 rounded-xl border border-line bg-canvas p-2 text-sm hover:border-accent focus-visible:outline-2 focus-visible:outline-offset-2 focus-visible:outline-accent";
    const picture = document.createElement("img");
    picture.alt = "";
    picture.width = 80;
    picture.height = 80;
    picture.className = "size-20 rounded-lg bg-raised object-contain";
    if (entry.thumb) picture.src = entry.thumb;
    const label = document.createElement("span");
    label.className = "max-w-full truncate font-semibold text-ink";
    label.textContent = entry.label;
    const when = document.createElement("span");
    when.className = "text-xs text-muted";
    when.textContent = new Date(entry.at).toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" });
    button.setAttribute("aria-label", `Show the result ${entry.label} from ${when.textContent}`);
    button.append(picture, label, when);
    button.addEventListener("click", () => onOpen(entry));
    li.append(button);
    return li;
  }

  clear.addEventListener("click", () => {
    write(read().filter((entry) => entry.model !== model));
    render();
  });
  window.addEventListener("storage", (event) => { if (event.key === KEY) render(); });
  render();

  return {
    async add(prediction, blob) {
      const output = prediction.output;
      const entry = {
        id: prediction.id,
        model,
        at: Date.now(),
        label: isClassification(output) ? `${output.label} · ${formatPercent(output.confidence)}` : "Result",
        thumb: blob ? await thumbnail(blob) : null,
        prediction: { id: prediction.id, output, metrics: prediction.metrics || {} },
      };
      write([entry, ...read().filter((e) => e.id !== entry.id)]);
      render();
    },
  };
}

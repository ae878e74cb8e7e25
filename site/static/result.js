// The result panel: a status line that screen readers announce, the steps, the error box, the
// preview and the model's answer. Everything is written with textContent: a label from the model
// can never become markup.
import { ShownError, formatMs, formatPercent } from "./messages.js";

const STEPS = ["upload", "queue", "run", "done"];

export function isClassification(output) {
  return output !== null && typeof output === "object" && !Array.isArray(output)
    && "label" in output && typeof output.confidence === "number";
}

export function findParts(root) {
  const find = (selector) => root.querySelector(selector);
  return {
    panel: find("[data-result-panel]"),
    status: find('[data-testid="status"]'),
    error: find('[data-testid="error"]'),
    progress: find("[data-progress]"),
    progressBar: find("[data-progress-bar]"),
    steps: root.querySelectorAll("[data-step]"),
    placeholder: find("[data-placeholder]"),
    preview: find("[data-preview]"),
    previewImage: find('[data-testid="preview"]'),
    previewInfo: find('[data-testid="preview-info"]'),
    note: find('[data-testid="shared-note"]'),
    output: find("[data-output]"),
    label: find('[data-testid="result-label"]'),
    confidence: find('[data-testid="result-confidence"]'),
    bars: find('[data-testid="result-probabilities"]'),
    json: find('[data-testid="result-json"]'),
    time: find('[data-testid="result-time"]'),
    billing: find('[data-testid="result-billing"]'),
    share: find("[data-share]"),
  };
}

export function setStatus(ui, state, text, step) {
  ui.status.dataset.state = state;
  ui.status.textContent = text;
  const at = STEPS.indexOf(step);
  for (const item of ui.steps) {
    const index = STEPS.indexOf(item.dataset.step);
    let value = "todo";
    if (step === "idle") value = "todo";
    else if (state === "failed" && index === at) value = "failed";
    else if (index < at || (state === "succeeded" && index === at)) value = "done";
    else if (index === at) value = "active";
    item.dataset.state = value;
  }
}

export function setProgress(ui, fraction) {
  if (fraction === null) {
    ui.progress.hidden = true;
    return;
  }
  ui.progress.hidden = false;
  ui.progressBar.style.width = `${Math.round(fraction * 100)}%`; // CSSOM: allowed under a strict CSP
}

export function showError(ui, error, step) {
  const title = error instanceof ShownError ? error.title : "Something went wrong";
  const message = error instanceof ShownError ? error.message : String(error && error.message ? error.message : error);
  ui.error.replaceChildren();
  const strong = document.createElement("strong");
  strong.className = "font-semibold";
  strong.textContent = `${title}. `;
  ui.error.append(strong, message);
  ui.error.hidden = false;
  setStatus(ui, "failed", `Failed: ${title.toLowerCase()}.`, step);
  setProgress(ui, null);
}

export function clearResult(ui) {
  ui.error.hidden = true;
  ui.error.replaceChildren();
  ui.output.hidden = true;
  ui.share.hidden = true;
  ui.note.hidden = true;
  ui.bars.replaceChildren();
  ui.json.hidden = true;
  ui.billing.hidden = true;
  ui.label.textContent = "";
  ui.confidence.textContent = "";
  ui.time.textContent = "";
}

export function showNote(ui, text) {
  ui.note.textContent = text;
  ui.note.hidden = false;
}

export function showPreview(ui, src, info, small) {
  ui.previewImage.src = src;
  // Tiny images (digits) look better as crisp pixels than as a blur.
  ui.previewImage.classList.toggle("[image-rendering:pixelated]", small);
  ui.previewInfo.textContent = info;
  ui.preview.hidden = false;
  ui.placeholder.hidden = true;
}

// What the status line says once a prediction succeeded: the answer itself, so that a screen
// reader announces it without the visitor having to look for it.
export function doneText(output, seconds) {
  const time = typeof seconds === "number" ? ` in ${formatMs(seconds * 1000)} of model time` : "";
  if (isClassification(output)) return `Done: ${output.label}, ${formatPercent(output.confidence)} confidence${time}.`;
  return `Done${time}.`;
}

export function showOutput(ui, prediction) {
  const output = prediction.output;
  ui.output.hidden = false;
  ui.placeholder.hidden = true;
  if (isClassification(output)) {
    ui.label.textContent = String(output.label);
    ui.confidence.textContent = `${formatPercent(output.confidence)} confidence`;
    const top = Array.isArray(output.probabilities)
      ? [...output.probabilities].sort((a, b) => b.probability - a.probability).slice(0, 5)
      : [];
    ui.bars.replaceChildren(...top.map((p) => bar(String(p.label), Number(p.probability), String(p.label) === String(output.label))));
    ui.label.hidden = false;
    ui.confidence.hidden = false;
  } else {
    ui.label.hidden = true;
    ui.confidence.hidden = true;
    ui.json.textContent = JSON.stringify(output, null, 2);
    ui.json.hidden = false;
  }
  const seconds = prediction.metrics && prediction.metrics.predict_time;
  ui.time.textContent = typeof seconds === "number" ? `Model time ${formatMs(seconds * 1000)}` : "";
  const billing = prediction.billing;
  if (billing && billing.amount !== undefined && billing.amount !== null) {
    const currency = (billing.currency || "usd").toLowerCase();
    const amount = currency === "usd" ? `$${billing.amount}` : `${billing.amount} ${currency.toUpperCase()}`;
    ui.billing.textContent = billing.billed_to === "demo" ? `Free demo · compute worth ${amount}` : `Billed ${amount}`;
    ui.billing.hidden = false;
  }
}

function bar(label, probability, top) {
  const item = document.createElement("li");
  item.className = "col-span-3 grid grid-cols-subgrid items-center text-sm";
  item.dataset.testid = "probability";
  const name = document.createElement("span");
  name.className = top ? "max-w-40 truncate font-semibold text-ink" : "max-w-40 truncate text-body";
  name.textContent = label;
  name.title = label;
  const track = document.createElement("span");
  track.className = "h-2 overflow-hidden rounded-full bg-raised";
  const fill = document.createElement("span");
  fill.className = top ? "block h-full rounded-full bg-accent" : "block h-full rounded-full bg-bar";
  fill.style.width = `${Math.max(0, Math.min(1, probability)) * 100}%`;
  track.append(fill);
  const value = document.createElement("span");
  value.className = "text-right font-mono text-xs tabular-nums text-body";
  value.textContent = formatPercent(probability);
  item.append(name, track, value);
  return item;
}

// The try-it widget: pick or drop an image, send it to the model through the proxy, show the answer.
//
// Configured by data attributes on the element marked data-tryit:
//   data-model="owner/name"     the model's address
//   data-fields="a,b,c"         the schema's field names, in order
//   data-file-fields="a"        the ones that take a file (each has a drop zone)
// Each non-file control carries data-input="<field>" and data-kind="<schema kind>".
// No inline script and no inline style: the page works under a strict Content-Security-Policy.
import { DEADLINE_MS, FINAL, createPrediction, httpError, networkError, parseJson, pollPrediction } from "./api.js";
import { Aborted, ShownError, formatMs, formatPercent, sentence } from "./messages.js";
import { dataUrl, prepareFile } from "./prepare.js";

function isClassification(output) {
  return output !== null && typeof output === "object" && !Array.isArray(output)
    && "label" in output && typeof output.confidence === "number";
}

// ---------------------------------------------------------------------------------- widget

function setupWidget(root) {
  const model = root.dataset.model;
  const fieldNames = (root.dataset.fields || "").split(",").filter(Boolean);
  const fileFields = new Set((root.dataset.fileFields || "").split(",").filter(Boolean));
  const form = root.querySelector("[data-form]");
  const find = (selector) => root.querySelector(selector);
  const ui = {
    status: find('[data-testid="status"]'),
    error: find('[data-testid="error"]'),
    progress: find("[data-progress]"),
    progressBar: find("[data-progress-bar]"),
    steps: root.querySelectorAll("[data-step]"),
    run: find("[data-run]"),
    placeholder: find("[data-placeholder]"),
    preview: find("[data-preview]"),
    previewImage: find('[data-testid="preview"]'),
    previewInfo: find('[data-testid="preview-info"]'),
    output: find("[data-output]"),
    label: find('[data-testid="result-label"]'),
    confidence: find('[data-testid="result-confidence"]'),
    bars: find('[data-testid="result-probabilities"]'),
    json: find('[data-testid="result-json"]'),
    time: find('[data-testid="result-time"]'),
    billing: find('[data-testid="result-billing"]'),
  };
  const prepared = new Map(); // file field -> { blob, name, note } of what will be sent
  let previewUrl = null;
  let current = null; // the AbortController of the run in flight

  function setStatus(state, text, step) {
    ui.status.dataset.state = state;
    ui.status.textContent = text;
    const order = ["upload", "queue", "run", "done"];
    const at = order.indexOf(step);
    for (const item of ui.steps) {
      const index = order.indexOf(item.dataset.step);
      let value = "todo";
      if (step === "idle") value = "todo";
      else if (state === "failed" && index === at) value = "failed";
      else if (index < at || (state === "succeeded" && index === at)) value = "done";
      else if (index === at) value = "active";
      item.dataset.state = value;
    }
  }

  function setProgress(fraction) {
    if (fraction === null) {
      ui.progress.hidden = true;
      return;
    }
    ui.progress.hidden = false;
    ui.progressBar.style.width = `${Math.round(fraction * 100)}%`; // CSSOM: allowed under a strict CSP
  }

  function showError(error, step) {
    const title = error instanceof ShownError ? error.title : "Something went wrong";
    const message = error instanceof ShownError ? error.message : String(error && error.message ? error.message : error);
    ui.error.replaceChildren();
    const strong = document.createElement("strong");
    strong.className = "font-semibold";
    strong.textContent = `${title}. `;
    ui.error.append(strong, message);
    ui.error.hidden = false;
    setStatus("failed", `Failed: ${title.toLowerCase()}.`, step);
    setProgress(null);
  }

  function clearResult() {
    ui.error.hidden = true;
    ui.error.replaceChildren();
    ui.output.hidden = true;
    ui.bars.replaceChildren();
    ui.json.hidden = true;
    ui.billing.hidden = true;
    ui.label.textContent = "";
    ui.confidence.textContent = "";
    ui.time.textContent = "";
  }

  function showPreview(item) {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(item.blob);
    ui.previewImage.src = previewUrl;
    // Tiny images (digits) look better as crisp pixels than as a blur.
    ui.previewImage.classList.toggle("[image-rendering:pixelated]", (item.width || 999) <= 96);
    ui.previewInfo.textContent = `${item.name} · ${item.note}`;
    ui.preview.hidden = false;
    ui.placeholder.hidden = true;
  }

  function showOutput(prediction) {
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
    name.className = top ? "max-w-40 truncate font-semibold text-slate-900" : "max-w-40 truncate text-slate-600";
    name.textContent = label;
    name.title = label;
    const track = document.createElement("span");
    track.className = "h-2 overflow-hidden rounded-full bg-slate-100";
    const fill = document.createElement("span");
    fill.className = top ? "block h-full rounded-full bg-indigo-600" : "block h-full rounded-full bg-slate-400";
    fill.style.width = `${Math.max(0, Math.min(1, probability)) * 100}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "text-right font-mono text-xs tabular-nums text-slate-600";
    value.textContent = formatPercent(probability);
    item.append(name, track, value);
    return item;
  }

  function readInputs() {
    const input = {};
    for (const name of fieldNames) {
      if (fileFields.has(name)) continue;
      const control = form.querySelector(`[data-input="${CSS.escape(name)}"]`);
      if (!control) continue;
      const kind = control.dataset.kind;
      if (kind === "boolean") {
        input[name] = control.checked;
        continue;
      }
      const raw = control.value.trim();
      if (raw === "" && !control.required) continue; // the server fills in the default
      if (kind === "integer") input[name] = Number.parseInt(raw, 10);
      else if (kind === "number") input[name] = Number(raw);
      else input[name] = control.value;
    }
    return input;
  }

  async function choose(name, file) {
    const zone = form.querySelector(`[data-dropzone="${CSS.escape(name)}"]`);
    const kind = zone ? zone.dataset.kind : "image";
    if (current) current.abort();
    clearResult();
    setStatus("preparing", "Reading the image…", "upload");
    try {
      const item = await prepareFile(file, kind);
      prepared.set(name, item);
      if (name === [...fileFields][0]) showPreview(item);
    } catch (error) {
      prepared.delete(name);
      showError(error, "upload");
      return;
    }
    if ([...fileFields].every((field) => prepared.has(field))) await run();
    else setStatus("idle", "Now choose the other files.", "idle");
  }

  async function run() {
    if (current) current.abort();
    const controller = new AbortController();
    current = controller;
    const { signal } = controller;
    clearResult();
    const missing = [...fileFields].find((field) => !prepared.has(field));
    if (missing) {
      showError(new ShownError("Nothing to send", `Choose ${fileFields.size > 1 ? `a file for “${missing}”` : "an image"} first.`), "upload");
      return;
    }
    if (!form.checkValidity()) {
      form.reportValidity();
      showError(new ShownError("Invalid input", "Check the highlighted field."), "upload");
      return;
    }
    ui.run.disabled = true;
    ui.run.setAttribute("aria-busy", "true");
    const deadline = Date.now() + DEADLINE_MS;
    try {
      const input = readInputs();
      for (const [name, item] of prepared) input[name] = await dataUrl(item.blob);
      if (signal.aborted) throw new Aborted();
      setStatus("uploading", "Uploading… 0 %", "upload");
      setProgress(0);
      const answer = await createPrediction(model, JSON.stringify({ input }), (fraction) => {
        setProgress(fraction);
        setStatus("uploading", `Uploading… ${Math.round(fraction * 100)} %`, "upload");
      }, signal);
      if (answer.status !== 201 && answer.status !== 200) throw httpError(answer.status, answer.text, answer.retryAfter);
      let prediction = parseJson(answer.text);
      if (!prediction || !prediction.id) throw new ShownError("Unexpected answer", "The server did not return a prediction.");
      setProgress(null);
      const update = (p) => {
        if (p.status === "starting") setStatus("starting", "Queued: waiting for the model…", "queue");
        else if (p.status === "processing") setStatus("processing", "Running the model…", "run");
      };
      update(prediction);
      if (!FINAL.has(prediction.status)) prediction = await pollPrediction(prediction.id, deadline, signal, update);
      if (prediction.status === "succeeded") {
        showOutput(prediction);
        const seconds = prediction.metrics && prediction.metrics.predict_time;
        setStatus("succeeded", `Done${typeof seconds === "number" ? ` in ${formatMs(seconds * 1000)} of model time` : ""}.`, "done");
      } else if (prediction.status === "failed") {
        throw new ShownError("Prediction failed", sentence(prediction.error || "The model could not handle this input."));
      } else {
        throw new ShownError("Canceled", "The prediction was canceled.");
      }
    } catch (error) {
      if (error instanceof Aborted || signal.aborted) return; // a newer run took over
      const step = ui.status.dataset.state === "processing" ? "run" : ui.status.dataset.state === "starting" ? "queue" : "upload";
      showError(error, step);
    } finally {
      if (current === controller) {
        current = null;
        ui.run.disabled = false;
        ui.run.removeAttribute("aria-busy");
      }
    }
  }

  async function runExample(button) {
    const values = parseJson(button.dataset.input) || {};
    for (const [name, value] of Object.entries(values)) {
      if (fileFields.has(name)) continue;
      const control = form.querySelector(`[data-input="${CSS.escape(name)}"]`);
      if (!control) continue;
      if (control.type === "checkbox") control.checked = Boolean(value);
      else control.value = String(value);
    }
    const files = Object.entries(values).filter(([name]) => fileFields.has(name));
    try {
      for (const [name, url] of files) {
        const response = await fetch(url);
        if (!response.ok) throw new ShownError("Example missing", `The example file could not be loaded (HTTP ${response.status}).`);
        const blob = await response.blob();
        const file = new File([blob], url.split("/").pop(), { type: blob.type });
        const zone = form.querySelector(`[data-dropzone="${CSS.escape(name)}"]`);
        prepared.set(name, await prepareFile(file, zone ? zone.dataset.kind : "image"));
        if (name === [...fileFields][0]) showPreview(prepared.get(name));
      }
    } catch (error) {
      showError(error instanceof ShownError ? error : networkError(), "upload");
      return;
    }
    await run();
  }

  for (const zone of form.querySelectorAll("[data-dropzone]")) {
    const name = zone.dataset.dropzone;
    const input = form.querySelector(`[data-file-input="${CSS.escape(name)}"]`);
    zone.addEventListener("click", () => input.click());
    zone.addEventListener("keydown", (event) => {
      if ((event.key === "Enter" || event.key === " ") && !event.repeat) {
        event.preventDefault();
        input.click();
      }
    });
    input.addEventListener("change", () => {
      if (input.files && input.files[0]) choose(name, input.files[0]);
      input.value = ""; // choosing the same file again still fires change
    });
    let depth = 0; // dragenter/dragleave also fire for children
    zone.addEventListener("dragenter", (event) => {
      event.preventDefault();
      depth += 1;
      zone.dataset.dragover = "";
    });
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
    });
    zone.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (depth === 0) delete zone.dataset.dragover;
    });
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      depth = 0;
      delete zone.dataset.dragover;
      const file = event.dataTransfer.files && event.dataTransfer.files[0];
      if (file) choose(name, file);
      else showError(new ShownError("Nothing dropped", "Drop an image file from your computer."), "upload");
    });
  }

  // A file dropped next to the zone would make the browser navigate away to it.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());

  // Pasting an image (a screenshot, say) fills the first image field.
  document.addEventListener("paste", (event) => {
    const first = [...fileFields][0];
    const file = event.clipboardData && [...event.clipboardData.files].find((f) => f.type.startsWith("image/"));
    if (first && file) choose(first, file);
  });

  for (const button of root.querySelectorAll("[data-example]")) {
    button.addEventListener("click", () => runExample(button));
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });

  setStatus("idle", ui.status.textContent, "idle");
}

for (const root of document.querySelectorAll("[data-tryit]")) setupWidget(root);

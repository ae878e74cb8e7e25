// The try-it widget: pick, drop, paste, photograph or give the URL of an image, send it to the
// model through the proxy, show the answer, remember it, and reopen it from a link.
//
// Configured by data attributes on the element marked data-tryit:
//   data-model="owner/name"     the model's address
//   data-public="true|false"    whether anyone may open this model's result links (PUBLIC_RESULTS)
//   data-fields="a,b,c"         the schema's field names, in order
//   data-file-fields="a"        the ones that take a file (each has a drop zone)
// Each non-file control carries data-input="<field>" and data-kind="<schema kind>".
// No inline script and no inline style: the page works under a strict Content-Security-Policy.
import { DEADLINE_MS, FINAL, createPrediction, httpError, networkError, parseJson, pollPrediction } from "./api.js";
import { fetchImage, setupCamera, setupPaste } from "./inputs.js";
import { Aborted, ShownError, sentence } from "./messages.js";
import { dataUrl, prepareFile } from "./prepare.js";
import { findRecent, setupRecent } from "./recent.js";
import { clearResult, doneText, findParts, setProgress, setStatus, showError, showNote, showOutput, showPreview } from "./result.js";
import { copyText } from "./clipboard.js";

const RESULT_PARAM = "result";

function setupWidget(root) {
  const model = root.dataset.model;
  const fieldNames = (root.dataset.fields || "").split(",").filter(Boolean);
  const fileFields = [...new Set((root.dataset.fileFields || "").split(",").filter(Boolean))];
  const primary = fileFields[0];
  const form = root.querySelector("[data-form]");
  const page = root.closest("section") || document;
  const ui = findParts(page);
  const runButton = form.querySelector("[data-run]");
  const urlInput = form.querySelector("[data-url-input]");
  const copyButton = page.querySelector('[data-testid="copy-link"]');
  const prepared = new Map(); // file field -> { blob, name, note } of what will be sent
  let previewUrl = null;
  let current = null; // the AbortController of the run in flight
  let shownId = null; // the prediction on display, for "Copy link"
  const recent = setupRecent(page, model, (entry) => openRecent(entry));

  const fail = (error) => showError(ui, error, "upload");

  function preview(item) {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(item.blob);
    showPreview(ui, previewUrl, `${item.name} · ${item.note}`, (item.width || 999) <= 96);
  }

  function readInputs() {
    const input = {};
    for (const name of fieldNames) {
      if (fileFields.includes(name)) continue;
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

  function kindOf(name) {
    const zone = form.querySelector(`[data-dropzone="${CSS.escape(name)}"]`);
    return zone ? zone.dataset.kind : "image";
  }

  async function choose(name, file) {
    if (current) current.abort();
    clearResult(ui);
    setStatus(ui, "preparing", "Reading the image…", "upload");
    try {
      const item = await prepareFile(file, kindOf(name));
      prepared.set(name, item);
      if (name === primary) preview(item);
    } catch (error) {
      prepared.delete(name);
      fail(error);
      return;
    }
    if (fileFields.every((field) => prepared.has(field))) await run();
    else setStatus(ui, "idle", "Now choose the other files.", "idle");
  }

  async function run() {
    if (current) current.abort();
    const controller = new AbortController();
    current = controller;
    const { signal } = controller;
    clearResult(ui);
    const missing = fileFields.find((field) => !prepared.has(field));
    if (missing) {
      fail(new ShownError("Nothing to send", `Choose ${fileFields.length > 1 ? `a file for “${missing}”` : "an image"} first.`));
      return;
    }
    if (!form.checkValidity()) {
      form.reportValidity();
      fail(new ShownError("Invalid input", "Check the highlighted field."));
      return;
    }
    runButton.disabled = true;
    runButton.setAttribute("aria-busy", "true");
    const deadline = Date.now() + DEADLINE_MS;
    try {
      const input = readInputs();
      for (const [name, item] of prepared) input[name] = await dataUrl(item.blob);
      if (signal.aborted) throw new Aborted();
      setStatus(ui, "uploading", "Uploading… 0 %", "upload");
      setProgress(ui, 0);
      const answer = await createPrediction(model, JSON.stringify({ input }), (fraction) => {
        setProgress(ui, fraction);
        setStatus(ui, "uploading", `Uploading… ${Math.round(fraction * 100)} %`, "upload");
      }, signal);
      if (answer.status !== 201 && answer.status !== 200) throw httpError(answer.status, answer.text, answer.retryAfter);
      let prediction = parseJson(answer.text);
      if (!prediction || !prediction.id) throw new ShownError("Unexpected answer", "The server did not return a prediction.");
      setProgress(ui, null);
      const update = (p) => {
        if (p.status === "starting") setStatus(ui, "starting", "Queued: waiting for the model…", "queue");
        else if (p.status === "processing") setStatus(ui, "processing", "Running the model…", "run");
      };
      update(prediction);
      if (!FINAL.has(prediction.status)) prediction = await pollPrediction(prediction.id, deadline, signal, update);
      if (prediction.status === "succeeded") {
        // Remembered first, so that a result on the screen is always in the recent list too.
        await recent.add(prediction, prepared.get(primary) && prepared.get(primary).blob);
        if (signal.aborted) throw new Aborted();
        succeeded(prediction);
      } else if (prediction.status === "failed") {
        throw new ShownError("Prediction failed", sentence(prediction.error || "The model could not handle this input."));
      } else {
        throw new ShownError("Canceled", "The prediction was canceled.");
      }
    } catch (error) {
      if (error instanceof Aborted || signal.aborted) return; // a newer run took over
      const state = ui.status.dataset.state;
      showError(ui, error, state === "processing" ? "run" : state === "starting" ? "queue" : "upload");
    } finally {
      if (current === controller) {
        current = null;
        runButton.disabled = false;
        runButton.removeAttribute("aria-busy");
      }
    }
  }

  function succeeded(prediction) {
    showOutput(ui, prediction);
    const seconds = prediction.metrics && prediction.metrics.predict_time;
    setStatus(ui, "succeeded", doneText(prediction.output, seconds), "done");
    shownId = prediction.id;
    ui.share.hidden = !shownId;
    copyButton.textContent = "Copy link";
    // The address bar holds the result's link too: a reload, a bookmark or a copy reopens it.
    const url = new URL(location.href);
    url.searchParams.set(RESULT_PARAM, prediction.id);
    history.replaceState(null, "", url);
  }

  function openRecent(entry) {
    if (current) current.abort();
    clearResult(ui);
    if (entry.thumb) showPreview(ui, entry.thumb, "From your recent results in this browser", false);
    succeeded(entry.prediction);
    showNote(ui, "Reopened from your recent results in this browser.");
    ui.panel.scrollIntoView({ block: "nearest" });
  }

  async function openShared(id) {
    const kept = findRecent(id);
    if (kept && kept.model === model) {
      openRecent(kept);
      return;
    }
    clearResult(ui);
    setStatus(ui, "starting", "Opening the shared result…", "queue");
    let response;
    try {
      response = await fetch(`/v1/predictions/${encodeURIComponent(id)}`, { headers: { Accept: "application/json" }, cache: "no-store" });
    } catch {
      fail(networkError());
      return;
    }
    const prediction = parseJson(await response.text());
    if (response.status === 404 || (prediction && prediction.model && prediction.model !== model)) {
      fail(new ShownError(
        "Result not available",
        root.dataset.public === "true"
          ? "This result is no longer kept: results stay readable for an hour after they finish. Try the model yourself below."
          : "Only the person who made this result can open its link, and results stay readable for an hour after they finish. Try the model yourself below.",
      ));
      return;
    }
    if (!response.ok || !prediction) {
      fail(httpError(response.status, JSON.stringify(prediction || {}), response.headers.get("Retry-After")));
      return;
    }
    if (prediction.status !== "succeeded") {
      fail(new ShownError("Result not available", `That prediction ${prediction.status === "failed" ? "failed" : "has not finished"}.`));
      return;
    }
    const image = prediction.input && Object.values(prediction.input).find((v) => typeof v === "string" && v.startsWith("data:image/"));
    if (image) showPreview(ui, image, "The image that was sent", false);
    succeeded(prediction);
    showNote(ui, "A shared result, opened from its link.");
  }

  async function loadUrl(raw) {
    if (!primary) return;
    if (current) current.abort();
    clearResult(ui);
    setStatus(ui, "preparing", "Loading the image from its address…", "upload");
    try {
      await choose(primary, await fetchImage(raw));
    } catch (error) {
      fail(error);
    }
  }

  async function runExample(button) {
    if (current) current.abort();
    clearResult(ui);
    setStatus(ui, "preparing", "Loading the example…", "upload");
    ui.panel.scrollIntoView({ block: "nearest" });
    const values = parseJson(button.dataset.input) || {};
    for (const [name, value] of Object.entries(values)) {
      if (fileFields.includes(name)) continue;
      const control = form.querySelector(`[data-input="${CSS.escape(name)}"]`);
      if (!control) continue;
      if (control.type === "checkbox") control.checked = Boolean(value);
      else control.value = String(value);
    }
    try {
      for (const [name, url] of Object.entries(values).filter(([key]) => fileFields.includes(key))) {
        const response = await fetch(url);
        if (!response.ok) throw new ShownError("Example missing", `The example file could not be loaded (HTTP ${response.status}).`);
        const blob = await response.blob();
        prepared.set(name, await prepareFile(new File([blob], url.split("/").pop(), { type: blob.type }), kindOf(name)));
        if (name === primary) preview(prepared.get(name));
      }
    } catch (error) {
      fail(error instanceof ShownError ? error : networkError());
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
      else fail(new ShownError("Nothing dropped", "Drop an image file from your computer."));
    });
  }

  // A file dropped next to the zone would make the browser navigate away to it.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());

  if (primary && kindOf(primary) === "image") {
    setupPaste((file) => choose(primary, file), fail, loadUrl);
    setupCamera(form, (file) => choose(primary, file), fail);
    form.querySelector("[data-url-load]").addEventListener("click", () => loadUrl(urlInput.value));
    urlInput.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault(); // not the form's submit: load this address
        loadUrl(urlInput.value);
      }
    });
  }

  // Shown only now: without JavaScript these controls could do nothing.
  for (const hidden of document.querySelectorAll("[data-ways-in], [data-example]")) hidden.hidden = false;
  for (const note of document.querySelectorAll("[data-no-script]")) note.hidden = true;
  for (const button of document.querySelectorAll("[data-example]")) {
    button.addEventListener("click", () => runExample(button));
  }

  copyButton.addEventListener("click", async () => {
    if (!shownId) return;
    const link = new URL(location.pathname, location.origin);
    link.searchParams.set(RESULT_PARAM, shownId);
    try {
      await copyText(link.href);
      copyButton.textContent = "Link copied";
      setStatus(ui, "succeeded", "Link copied.", "done");
    } catch {
      setStatus(ui, "succeeded", `Copy this link: ${link.href}`, "done");
    }
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });

  setStatus(ui, "idle", ui.status.textContent, "idle");
  const shared = new URL(location.href).searchParams.get(RESULT_PARAM);
  if (shared) openShared(shared);
}

for (const root of document.querySelectorAll("[data-tryit]")) setupWidget(root);

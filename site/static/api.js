// The two calls the widget makes through the proxy, anonymously (the proxy applies a demo quota):
// create a prediction (XMLHttpRequest, for upload progress), then poll it with backoff until it
// is final or the deadline passes. HTTP errors become ShownErrors from their {"detail"} bodies.
import { Aborted, ShownError, formatWait, sentence } from "./messages.js";

const POLL_FIRST_MS = 150;
const POLL_FACTOR = 1.5;
const POLL_MAX_MS = 2000;
export const DEADLINE_MS = 60000;
export const FINAL = new Set(["succeeded", "failed", "canceled"]);
const RETRYABLE = new Set([429, 502, 503, 504]);

export function createPrediction(model, body, onProgress, signal) {
  // XMLHttpRequest rather than fetch: only it reports upload progress.
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    const path = model.split("/").map(encodeURIComponent).join("/");
    xhr.open("POST", `/v1/models/${path}/predictions`);
    xhr.setRequestHeader("Content-Type", "application/json");
    xhr.setRequestHeader("Accept", "application/json");
    xhr.timeout = DEADLINE_MS;
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    };
    xhr.onload = () => resolve({ status: xhr.status, text: xhr.responseText, retryAfter: xhr.getResponseHeader("Retry-After") });
    xhr.onerror = () => reject(networkError());
    xhr.ontimeout = () => reject(deadlineError());
    xhr.onabort = () => reject(new Aborted());
    signal.addEventListener("abort", () => xhr.abort(), { once: true });
    xhr.send(body);
  });
}

export async function pollPrediction(id, deadline, signal, onUpdate) {
  let delay = POLL_FIRST_MS;
  let lastFailure = null;
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) throw lastFailure || deadlineError();
    await sleep(Math.min(delay, left), signal);
    delay = Math.min(delay * POLL_FACTOR, POLL_MAX_MS);
    let response;
    try {
      response = await fetch(`/v1/predictions/${encodeURIComponent(id)}`, {
        headers: { Accept: "application/json" },
        cache: "no-store",
        signal,
      });
    } catch (error) {
      if (signal.aborted) throw new Aborted();
      lastFailure = networkError(); // a blip: keep polling until the deadline
      continue;
    }
    const text = await response.text();
    if (response.ok) {
      lastFailure = null;
      const prediction = parseJson(text);
      if (!prediction || typeof prediction.status !== "string") {
        throw new ShownError("Unexpected answer", "The server sent something that is not a prediction.");
      }
      onUpdate(prediction);
      if (FINAL.has(prediction.status)) return prediction;
      continue;
    }
    const error = httpError(response.status, text, response.headers.get("Retry-After"));
    if (!RETRYABLE.has(response.status)) throw error;
    lastFailure = error;
    const wait = retryAfterSeconds(response.headers.get("Retry-After"));
    if (wait) delay = Math.min(Math.max(delay, wait * 1000), POLL_MAX_MS * 5);
  }
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new Aborted());
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); reject(new Aborted()); }, { once: true });
  });
}

export function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

export function httpError(status, text, retryAfterHeader) {
  const body = parseJson(text);
  let detail = "";
  if (body && typeof body.detail === "string") detail = body.detail;
  else if (body && body.detail) detail = JSON.stringify(body.detail);
  const wait = retryAfterSeconds(retryAfterHeader);
  const again = wait ? `Try again in ${formatWait(wait)}.` : "Try again in a moment.";
  switch (status) {
    case 429:
      return new ShownError("Limit reached", `${sentence(detail || "Too many requests right now.")} ${again}`);
    case 413:
      return new ShownError("Too large", `${sentence(detail || "This input is too large for the server.")} Try a smaller image.`);
    case 415:
      return new ShownError("Wrong file type", sentence(detail || "The server does not accept this type of file."));
    case 400:
    case 422:
      return new ShownError("Invalid input", sentence(detail || "The server rejected this input."));
    case 401:
    case 403:
      return new ShownError("Not allowed", sentence(detail || "The demo is not available right now."));
    case 404:
      return new ShownError("Not found", sentence(detail || "This model or prediction is not available."));
    case 502:
    case 503:
    case 504:
      return new ShownError(
        "Model server unavailable",
        `The model server is starting or unavailable. ${wait ? `Try again in ${formatWait(wait)}.` : "Try again in a few seconds."}`,
      );
    default:
      return new ShownError("Unexpected answer", `The server answered HTTP ${status}${detail ? `: ${sentence(detail)}` : "."}`);
  }
}

export function networkError() {
  return new ShownError("Network error", "Could not reach the server. Check your connection and try again.");
}

function deadlineError() {
  return new ShownError("Timed out", `No result after ${DEADLINE_MS / 1000} s. The model may be busy; try again in a moment.`);
}

function retryAfterSeconds(value) {
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(1, Math.ceil(seconds));
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(1, Math.ceil((date - Date.now()) / 1000));
}

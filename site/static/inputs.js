// The ways in besides a drop or the file picker: a paste (Ctrl/Cmd+V anywhere on the page), an
// image URL that this browser fetches (the server never fetches a visitor's URL), and the camera.
// Each hands a File to `choose`, or a ShownError to `fail`, so the page always says what happened.
import { ShownError, formatBytes } from "./messages.js";

const MAX_FETCH_BYTES = 25 * 1024 * 1024;
const FETCH_TIMEOUT_MS = 15000;

function editable(target) {
  return target instanceof HTMLElement && (target.isContentEditable || target.matches("input, textarea, select"));
}

export function setupPaste(choose, fail, loadUrl) {
  document.addEventListener("paste", (event) => {
    const data = event.clipboardData;
    if (!data) return;
    const file = [...data.files][0];
    if (!file) {
      if (editable(event.target)) return; // text pasted into a field goes into the field
      const text = data.getData("text/plain").trim();
      event.preventDefault();
      if (/^https?:\/\/\S+$/i.test(text)) loadUrl(text);
      else if (text) fail(new ShownError("Not an image", "The clipboard holds text, not an image. Copy an image, or an image’s address, and paste again."));
      else fail(new ShownError("Nothing to paste", "The clipboard holds no image. Copy an image first, then paste it here."));
      return;
    }
    event.preventDefault();
    choose(file); // a non-image file gets prepareFile's "Not an image" message
  });
}

export async function fetchImage(raw) {
  let url;
  try {
    url = new URL(raw.trim());
  } catch {
    throw new ShownError("Not a web address", "Enter the full address of an image, starting with https://.");
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new ShownError("Not a web address", "Only http and https addresses can be loaded.");
  }
  let response;
  try {
    response = await fetch(url, {
      mode: "cors",
      credentials: "omit",
      referrerPolicy: "no-referrer",
      signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
    });
  } catch (error) {
    const late = error && error.name === "TimeoutError";
    throw new ShownError(
      "Could not load the image",
      late
        ? `${url.host} did not answer within ${FETCH_TIMEOUT_MS / 1000} s. Download the image and drop it here instead.`
        : `${url.host} did not answer, or it does not let other websites read its images. Download the image and drop it here instead.`,
    );
  }
  if (!response.ok) {
    throw new ShownError("Could not load the image", `${url.host} answered HTTP ${response.status} for that address.`);
  }
  const type = (response.headers.get("Content-Type") || "").split(";")[0].trim().toLowerCase();
  if (!type.startsWith("image/")) {
    throw new ShownError(
      "Not an image",
      `That address holds ${type ? `a ${type} document` : "something"}, not an image. Use the address of the image itself (right-click it: Copy image address).`,
    );
  }
  const declared = Number(response.headers.get("Content-Length"));
  if (declared > MAX_FETCH_BYTES) throw tooLarge(declared);
  const blob = await response.blob();
  if (blob.size > MAX_FETCH_BYTES) throw tooLarge(blob.size);
  const name = decodeURIComponent(url.pathname.split("/").pop() || "") || "image";
  return new File([blob], name, { type });
}

function tooLarge(bytes) {
  return new ShownError("Too large", `That image is ${formatBytes(bytes)}; the limit is ${formatBytes(MAX_FETCH_BYTES)}.`);
}

export function setupCamera(form, choose, fail) {
  const button = form.querySelector("[data-camera]");
  const panel = form.querySelector("[data-camera-panel]");
  const video = form.querySelector("[data-camera-video]");
  const shoot = form.querySelector("[data-camera-shoot]");
  const close = form.querySelector("[data-camera-close]");
  const fallback = form.querySelector("[data-capture-input]");
  if (!button) return;
  let stream = null;

  function stop() {
    if (stream) for (const track of stream.getTracks()) track.stop();
    stream = null;
    video.srcObject = null;
    panel.hidden = true;
  }

  button.addEventListener("click", async () => {
    // Without getUserMedia (an older browser, or a page not served over https) the phone's own
    // camera app still opens through the file input's `capture`.
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      fallback.click();
      return;
    }
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
    } catch (error) {
      stop();
      fail(cameraError(error));
      return;
    }
    video.srcObject = stream;
    panel.hidden = false;
    try {
      await video.play();
    } catch {
      // autoplay of a muted stream is allowed; if not, the first frame still shows
    }
    shoot.focus();
  });

  shoot.addEventListener("click", () => {
    if (!stream || !video.videoWidth) return;
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    stop();
    button.focus();
    canvas.toBlob((blob) => {
      if (blob) choose(new File([blob], "photo.jpg", { type: "image/jpeg" }));
      else fail(new ShownError("No photo", "The camera gave no picture. Try again."));
    }, "image/jpeg", 0.92);
  });

  close.addEventListener("click", () => {
    stop();
    button.focus();
  });

  fallback.addEventListener("change", () => {
    if (fallback.files && fallback.files[0]) choose(fallback.files[0]);
    fallback.value = "";
  });
}

function cameraError(error) {
  const name = error && error.name;
  if (name === "NotAllowedError" || name === "SecurityError") {
    return new ShownError(
      "Camera not allowed",
      "The browser did not let this page use the camera. Allow the camera for this site (in the address bar’s site settings) and try again, or choose a picture instead.",
    );
  }
  if (name === "NotFoundError" || name === "OverconstrainedError") {
    return new ShownError("No camera", "No camera was found on this device. Choose a picture instead.");
  }
  if (name === "NotReadableError") {
    return new ShownError("Camera busy", "The camera is in use by another app. Close it and try again.");
  }
  return new ShownError("Camera unavailable", "The camera could not be started. Choose a picture instead.");
}

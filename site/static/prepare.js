// Prepares a chosen file for upload: checks that it is an image; scales photos larger than
// MAX_SIDE down on a canvas and re-encodes them as WebP (JPEG where the browser has no WebP
// encoder); sends small images exactly as they are.
import { ShownError, formatBytes } from "./messages.js";

const MAX_SIDE = 1024; // px: larger images are scaled down before upload
const MAX_AS_IS_BYTES = 1.5 * 1024 * 1024; // smaller images within MAX_SIDE are sent untouched
const QUALITY = 0.9;

export async function prepareFile(file, kind) {
  if (kind !== "image") {
    return { blob: file, name: file.name, note: `${formatBytes(file.size)} · sent as is` };
  }
  if (!file.type.startsWith("image/")) {
    throw new ShownError(
      "Not an image",
      `“${file.name}” is ${file.type ? `a ${file.type} file` : "not an image"}. Choose a PNG, JPEG, WebP or GIF image.`,
    );
  }
  if (file.type === "image/svg+xml") {
    throw new ShownError("Not supported", "SVG drawings are not supported. Choose a PNG, JPEG, WebP or GIF image.");
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    throw new ShownError(
      "Unreadable image",
      `“${file.name}” could not be read: it may be damaged, or in a format this browser cannot open.`,
    );
  }
  const { width, height } = bitmap;
  const longest = Math.max(width, height);
  if (longest <= MAX_SIDE && file.size <= MAX_AS_IS_BYTES) {
    bitmap.close();
    return { blob: file, name: file.name, width, height, note: `${width}×${height} px · ${formatBytes(file.size)} · sent as is` };
  }
  const scale = Math.min(1, MAX_SIDE / longest);
  const w = Math.max(1, Math.round(width * scale));
  const h = Math.max(1, Math.round(height * scale));
  const canvas = drawScaled(bitmap, w, h, null);
  bitmap.close();
  let blob = await canvasBlob(canvas, "image/webp");
  if (!blob || blob.type !== "image/webp") {
    // No WebP encoder (older Safari answers PNG instead): JPEG has no alpha, so flatten on white.
    blob = await canvasBlob(drawScaled(canvas, w, h, "#ffffff"), "image/jpeg");
  }
  if (!blob) throw new ShownError("Unreadable image", "This browser could not re-encode the image.");
  const format = blob.type === "image/webp" ? "WebP" : "JPEG";
  const what = scale < 1 ? `scaled from ${width}×${height} to ${w}×${h} px` : `${w}×${h} px, re-encoded`;
  return { blob, name: file.name, width: w, height: h, note: `${what} · ${format} · ${formatBytes(blob.size)}` };
}

function drawScaled(source, w, h, background) {
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  const context = canvas.getContext("2d");
  if (background) {
    context.fillStyle = background;
    context.fillRect(0, 0, w, h);
  }
  context.imageSmoothingEnabled = true;
  context.imageSmoothingQuality = "high";
  context.drawImage(source, 0, 0, w, h);
  return canvas;
}

function canvasBlob(canvas, type) {
  return new Promise((resolve) => canvas.toBlob(resolve, type, QUALITY));
}

export function dataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new ShownError("Unreadable file", "The file could not be read."));
    reader.readAsDataURL(blob);
  });
}

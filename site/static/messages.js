// What the widget tells people: errors written for them, and numbers formatted for them.

export class ShownError extends Error {
  // An error whose title and message are written for the visitor.
  constructor(title, message) {
    super(message);
    this.title = title;
  }
}

export class Aborted extends Error {} // a newer run took over: nothing to show

export function formatWait(seconds) {
  if (seconds < 90) return `${seconds} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${Math.round(seconds / 3600)} h`;
}

export function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

export function formatMs(ms) {
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}

export function formatPercent(p) {
  return `${(p * 100).toFixed(1)} %`;
}

export function sentence(text) {
  const trimmed = String(text).trim();
  return /[.!?]$/.test(trimmed) ? trimmed : `${trimmed}.`;
}

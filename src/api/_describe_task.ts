// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import type { TaskInfo } from "./task_info.ts";

/** Names a task for a log line: `"name" at index N of METHOD /path`. */
export function describeTask(info: TaskInfo): string {
  let text = `"${info.name}" at index ${info.index}`;
  if (info.request !== undefined) {
    text += ` of ${info.request.method} ${pathOf(info.request.url)}`;
  }
  if (info.delivered === false) text += " (response not delivered)";
  return escapeControls(text);
}

function pathOf(url: string): string {
  try {
    return new URL(url).pathname;
  } catch {
    return url.replace(/[?#].*$/s, "");
  }
}

// C0 controls, DEL and C1 controls, which terminals and log readers act on
// (a newline starts a forged line, ESC and CSI recolour or erase one), and
// the separators and bidirectional controls that break or reorder a line
// in some readers.
const CONTROLS =
  // deno-lint-ignore no-control-regex
  /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

const NAMED: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

/**
 * `text` with its control characters escaped as JavaScript writes them
 * (`\n`, `\x1b`, `\u009b`), for a line of the default reporters: a task's
 * name, a request's path or an error's text may come from a client. Other
 * characters, backslashes included, are kept as they are.
 */
export function escapeControls(text: string): string {
  return text.replace(CONTROLS, escapeControl);
}

function escapeControl(char: string): string {
  const code = char.charCodeAt(0);
  return NAMED[char] ??
    (code < 0x80
      ? `\\x${code.toString(16).padStart(2, "0")}`
      : `\\u${code.toString(16).padStart(4, "0")}`);
}

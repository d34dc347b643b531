// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import type { TaskInfo } from "./task_info.ts";

/** Names a task for a log line: `"name" at index N of METHOD /path`. */
export function describeTask(info: TaskInfo): string {
  let text = `"${info.name}" at index ${info.index}`;
  if (info.request !== undefined) {
    text += ` of ${info.request.method} ${pathOf(info.request.url)}`;
  }
  if (info.delivered === false) text += " (response not delivered)";
  return text;
}

function pathOf(url: string): string {
  try {
    return new URL(url).pathname;
  } catch {
    return url.replace(/[?#].*$/s, "");
  }
}

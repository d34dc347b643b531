// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import { isInstance } from "./_promise.ts";

/**
 * A task's failure as text, for the failed task a durable backend keeps:
 * an error's stack (or its message, when `part` says so), a string as
 * it is, any other value as JSON, else as `String()` or `Deno.inspect()`
 * shows it. Never throws: a task may throw anything, and each of these can
 * throw on some value (a cycle, a null prototype, a revoked proxy, a getter
 * that throws), so each is tried in turn.
 */
export function errorText(
  value: unknown,
  part: "stack" | "message" = "stack",
): string {
  if (typeof value === "string") return value;
  const error = isInstance(value, Error) ? value : undefined;
  const ways: (() => unknown)[] = error === undefined
    ? [() => JSON.stringify(value), () => String(value)]
    : [
      () => part === "stack" ? error.stack : error.message,
      () => String(error),
    ];
  ways.push(() => Deno.inspect(value));
  for (const way of ways) {
    try {
      const text = way();
      if (typeof text === "string" && text !== "") return text;
    } catch {
      // The next way, then.
    }
  }
  return `[${typeof value} that cannot be described]`;
}

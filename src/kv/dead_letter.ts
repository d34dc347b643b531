// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The KV backend's dead letter: a type only, below both the backend, which
// lists them, and its consumer, which writes them.

import type { RequestSummary } from "../api/task_info.ts";

/**
 * A task that will not run again unless it is requeued.
 *
 * @example Alert on dead letters
 * ```ts
 * import type { DeadLetter } from "@afterward/background-tasks/kv";
 * import assert from "node:assert/strict";
 *
 * function alert(letter: DeadLetter): string {
 *   return `${letter.name} ${letter.id} ${letter.reason} after ${letter.attempts} attempts`;
 * }
 * assert.equal(
 *   alert({
 *     id: "c1:0", reason: "failed", name: "charge", args: [], index: 0, attempts: 3,
 *     error: "Error: declined", request: undefined, at: new Date(0),
 *   }),
 *   "charge c1:0 failed after 3 attempts",
 * );
 * ```
 */
export interface DeadLetter {
  /** The task's stable id. */
  readonly id: string;
  /** Why: it failed at its last attempt, or Deno KV gave up delivering it. */
  readonly reason: "failed" | "undelivered";
  /** The task's name. */
  readonly name: string;
  /** Its arguments. */
  readonly args: readonly unknown[];
  /** Its index in its chain. */
  readonly index: number;
  /** The attempts made. */
  readonly attempts: number;
  /** The last error, as text (its stack when it had one). */
  readonly error: string;
  /** The request whose handler added it. */
  readonly request: RequestSummary | undefined;
  /** When it became a dead letter. */
  readonly at: Date;
}

// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The drains under way: each waits for the chains that were live when it
// began (those up to a sequence number) and counts what happened to their
// tasks meanwhile. A drain with a deadline asks the runner to give up on
// what it still waits for.

import { MAX_TIMER_DELAY } from "../util/_assert.ts";
import type { TaskBackend } from "../api/task_backend.ts";
import type { DrainResult } from "../api/task_controls.ts";
import type { DrainOptions } from "../api/options.ts";

interface Waiter {
  /** The chains it waits for: the live ones up to this sequence number. */
  readonly last: number;
  /** How many of them are still live. */
  remaining: number;
  succeeded: number;
  failed: number;
  handedOver: number;
  abandoned: number;
  abandonedTasks: Record<string, number>;
  unstored: number;
  resolve: (result: DrainResult) => void;
  cleanup: () => void;
}

/** What happened to tasks, in the words of a drain's result. */
export type Counted = "succeeded" | "failed" | "handedOver";

/** The drains of one runner. */
export class Drains {
  readonly #waiters = new Set<Waiter>();
  readonly #backend: Pick<TaskBackend, "status"> | undefined;

  /** `backend`, if any, says its status in each result. */
  constructor(backend?: Pick<TaskBackend, "status">) {
    this.#backend = backend;
  }

  /**
   * Starts a drain of the `live` chains up to sequence `last`. At its
   * deadline, `giveUp(last, reason)` must abandon those still live.
   */
  begin(
    last: number,
    live: number,
    options: DrainOptions,
    giveUp: (last: number, reason: unknown) => void,
  ): Promise<DrainResult> {
    const { timeout = Infinity, signal } = options;
    return new Promise((resolve) => {
      const waiter: Waiter = {
        last,
        remaining: live,
        succeeded: 0,
        failed: 0,
        handedOver: 0,
        abandoned: 0,
        abandonedTasks: {},
        unstored: 0,
        resolve,
        cleanup: () => {},
      };
      if (live === 0) return this.#settle(waiter);
      this.#waiters.add(waiter);
      const onDeadline = () =>
        giveUp(
          last,
          signal?.reason ?? new DOMException(
            "Background task abandoned at a shutdown deadline",
            "AbortError",
          ),
        );
      if (signal?.aborted) return onDeadline();
      const timer = timeout <= MAX_TIMER_DELAY
        ? setTimeout(onDeadline, timeout)
        : undefined;
      signal?.addEventListener("abort", onDeadline, { once: true });
      waiter.cleanup = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onDeadline);
      };
    });
  }

  /** Counts `n` tasks of the chain `sequence` in every drain waiting for it. */
  count(sequence: number, what: Counted, n: number): void {
    // Most of the time no drain is under way: no iterator then.
    if (this.#waiters.size === 0) return;
    for (const waiter of this.#waiters) {
      if (sequence <= waiter.last) waiter[what] += n;
    }
  }

  /** Counts the tasks of the chain `sequence` that were given up on. */
  abandoned(
    sequence: number,
    names: readonly string[],
    storing = false,
  ): void {
    for (const waiter of this.#waiters) {
      if (sequence > waiter.last) continue;
      waiter.abandoned += names.length;
      if (storing) waiter.unstored += names.length;
      for (const name of names) {
        waiter.abandonedTasks[name] = (waiter.abandonedTasks[name] ?? 0) + 1;
      }
    }
  }

  /**
   * A chain made live with the sequence of a chain live before it: the
   * drains waiting for that one wait for it too.
   */
  joined(sequence: number): void {
    if (this.#waiters.size === 0) return;
    for (const waiter of this.#waiters) {
      if (sequence <= waiter.last) waiter.remaining++;
    }
  }

  /** The chain `sequence` is no longer live: drains waiting only for it end. */
  ended(sequence: number): void {
    if (this.#waiters.size === 0) return;
    for (const waiter of this.#waiters) {
      if (sequence <= waiter.last && --waiter.remaining === 0) {
        this.#settle(waiter);
      }
    }
  }

  #settle(waiter: Waiter): void {
    this.#waiters.delete(waiter);
    waiter.cleanup();
    const {
      succeeded,
      failed,
      handedOver,
      abandoned,
      abandonedTasks,
      unstored,
    } = waiter;
    const backend = this.#backend?.status;
    waiter.resolve({
      succeeded,
      failed,
      handedOver,
      abandoned,
      abandonedTasks,
      unstored,
      ...(backend && { backend }),
    });
  }
}

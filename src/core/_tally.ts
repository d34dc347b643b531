// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// A runner's counts of tasks, which `stats` shows: what is pending, and
// what happened to the rest. Pending is always queued plus running plus
// storing: the three are disjoint.

import type { BackendStatus } from "../api/task_backend.ts";
import type { TaskStats } from "../api/task_controls.ts";

/** Why tasks left the pending count without running here. */
export type Dropped =
  | "refused"
  | "discarded"
  | "skipped"
  | "abandoned"
  | "enqueued";

/** The counts behind `stats`. */
export class Tally {
  pending = 0;
  /** Chains running, each with its head task running (or waiting to retry). */
  running = 0;
  /** Tasks of the chains a backend is storing. */
  storing = 0;
  #succeeded = 0;
  #failed = 0;
  #timedOut = 0;
  #retried = 0;
  #dropped: Record<Dropped, number> = {
    refused: 0,
    discarded: 0,
    skipped: 0,
    abandoned: 0,
    enqueued: 0,
  };

  /** A task is over, after its last attempt. */
  settled(outcome: "succeeded" | "failed" | "timedOut", n = 1): void {
    this.pending -= n;
    if (outcome === "succeeded") this.#succeeded += n;
    else this.#failed += n;
    if (outcome === "timedOut") this.#timedOut += n;
  }

  retried(): void {
    this.#retried++;
  }

  /** `n` pending tasks leave without running here; a refused one never was pending. */
  dropped(why: Dropped, n: number): void {
    if (why !== "refused") this.pending -= n;
    this.#dropped[why] += n;
  }

  snapshot(backend?: BackendStatus): TaskStats {
    return {
      pending: this.pending,
      queued: this.pending - this.running - this.storing,
      running: this.running,
      succeeded: this.#succeeded,
      failed: this.#failed,
      timedOut: this.#timedOut,
      retried: this.#retried,
      ...this.#dropped,
      storing: this.storing,
      ...(backend && { backend }),
    };
  }
}

// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// A runner's counts of tasks, which `stats` shows: what is pending, and
// what happened to the rest. Pending is always queued plus running plus
// storing: the three are disjoint. Only the runner writes them, as its
// chains move; an end is counted from one table (`ENDED_AS`).

import type { Settled } from "./_call.ts";
import type { ChainState, EndState } from "./_chain.ts";
import type { BackendStatus } from "../api/task_backend.ts";
import type { TaskStats } from "../api/task_controls.ts";

/** The counts of what became of tasks, as `stats` names them. */
interface Counts {
  succeeded: number;
  failed: number;
  timedOut: number;
  retried: number;
  refused: number;
  discarded: number;
  skipped: number;
  deduplicated: number;
  abandoned: number;
  handedOver: number;
}

/**
 * What the tasks a chain still holds when it ends count as, by the state it
 * ends in. A chain that ran all its tasks holds none (each was counted as it
 * settled); one `finished` with tasks is one a backend failed to store after
 * its response, whose tasks failed.
 */
const ENDED_AS: { readonly [S in EndState]: keyof Counts } = {
  finished: "failed",
  handedOver: "handedOver",
  discarded: "discarded",
  skipped: "skipped",
  deduplicated: "deduplicated",
  abandoned: "abandoned",
};

/** The counts behind `stats`. */
export class Tally {
  #pending = 0;
  /** Chains running, each with its head task running (or waiting to retry). */
  #running = 0;
  /** Tasks of the chains a backend is storing. */
  #storing = 0;
  readonly #counts: Counts = {
    succeeded: 0,
    failed: 0,
    timedOut: 0,
    retried: 0,
    refused: 0,
    discarded: 0,
    skipped: 0,
    deduplicated: 0,
    abandoned: 0,
    handedOver: 0,
  };

  /** How many tasks are pending: added, and neither over nor gone. */
  get pending(): number {
    return this.#pending;
  }

  /** A task joined a chain. */
  added(): void {
    this.#pending++;
  }

  /** A task was refused: it never was pending. */
  refused(): void {
    this.#counts.refused++;
  }

  /** A chain started running, or a backend started storing its `n` tasks. */
  started(state: "running" | "storing", n: number): void {
    if (state === "running") this.#running++;
    else this.#storing += n;
  }

  /** A task is over, after its last attempt. */
  settled(outcome: Settled): void {
    this.#pending--;
    if (outcome === "succeeded") this.#counts.succeeded++;
    else this.#counts.failed++;
    if (outcome === "timedOut") this.#counts.timedOut++;
  }

  retried(): void {
    this.#counts.retried++;
  }

  /**
   * A chain moved from `from` to the end state `to`, holding `n` tasks that
   * were not over: they leave the pending count, as `ENDED_AS` says.
   */
  closed(from: ChainState, to: EndState, n: number): void {
    this.#pending -= n;
    if (from === "running") this.#running--;
    else if (from === "storing") this.#storing -= n;
    this.#counts[ENDED_AS[to]] += n;
  }

  snapshot(backend?: BackendStatus): TaskStats {
    return {
      pending: this.#pending,
      queued: this.#pending - this.#running - this.#storing,
      running: this.#running,
      ...this.#counts,
      storing: this.#storing,
      ...(backend && { backend }),
    };
  }
}

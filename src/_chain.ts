// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import type {
  BackgroundTasks,
  RequestSummary,
  TaskResult,
} from "./background_tasks.ts";

/** One added task: the function, its arguments and the name it is reported by. */
export interface Task {
  fn: (...args: unknown[]) => unknown;
  args: unknown[];
  name: string;
}

/**
 * The runner that will execute a chain. It hears about every task as it is
 * added, so that it can count (and later refuse) pending work.
 */
export interface ChainOwner {
  /** Called before a task is added; throwing refuses the task. */
  accept(chain: Chain): void;
  /** Called when `count` accepted tasks have finished or will never run. */
  release(count: number): void;
  /** Called once when a chain that was handed to the owner has finished. */
  finished(chain: Chain): void;
}

/** Why a chain stopped accepting tasks; it completes the message of a late `addTask`. */
export type ClosedBecause =
  | "the request's tasks have already run"
  | "the handler returned its response without adding any"
  | "the handler failed and its tasks were discarded"
  | "the response was not delivered and its tasks were skipped";

/**
 * The runner's view of one request's tasks: the queue, where it is in its life,
 * and what reports need to know about the request. {@linkcode BackgroundTasks}
 * is its public face.
 */
export class Chain {
  /** Every task added so far, in order; a slot is cleared once its task has run. */
  readonly tasks: (Task | undefined)[] = [];
  /** Set by a wrapper right after creating the tasks, before its handler runs. */
  owner: ChainOwner | undefined = undefined;
  /** Set once the chain starts running (or was run by hand): the settled results. */
  results: Promise<TaskResult[]> | undefined;
  /** Whether its tasks have started running: from then on each task is released as it finishes. */
  started = false;
  /** Method and URL of the request, captured while its handler ran. */
  request: RequestSummary | undefined;
  /** Whether the response reached the client; `undefined` when nobody said. */
  delivered: boolean | undefined;
  /** Scheduling order, used by `drain()` to tell earlier chains from later ones. */
  sequence = 0;
  #closedBecause: ClosedBecause | undefined;

  /** Whether tasks can still be added. */
  get open(): boolean {
    return this.#closedBecause === undefined;
  }

  /** Whether it has neither started running nor been closed. */
  get idle(): boolean {
    return this.#closedBecause === undefined && !this.started;
  }

  add(task: Task): void {
    if (this.#closedBecause !== undefined) {
      throw new Error(`Cannot add task as ${this.#closedBecause}`);
    }
    this.owner?.accept(this);
    this.tasks.push(task);
  }

  /**
   * Stops accepting tasks. An idle chain's tasks will never run, so they are
   * released from the owner's count.
   */
  close(because: ClosedBecause): void {
    if (this.#closedBecause !== undefined) return;
    this.#closedBecause = because;
    if (!this.started && this.tasks.length > 0) {
      this.owner?.release(this.tasks.length);
    }
  }
}

/**
 * Access to the chain behind a {@linkcode BackgroundTasks}, which keeps it in a
 * private field. Filled in by the class's static block, so it is ready as soon
 * as the class can be constructed: whoever holds a `BackgroundTasks` can use it.
 */
export const internals = {} as {
  chainOf(tasks: BackgroundTasks): Chain;
};

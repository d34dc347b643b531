// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import type {
  BackgroundTasks,
  RequestSummary,
  TaskResult,
} from "./background_tasks.ts";
import type { DefinedTask } from "./define_task.ts";

/** One added task: the function, its arguments and the name it is reported by. */
export interface Task {
  fn: (...args: unknown[]) => unknown;
  args: unknown[];
  name: string;
  /** Set for a task made by `defineTask`: `fn` then takes a context first. */
  defined: DefinedTask | undefined;
}

/**
 * The runner that owns a chain, told about every step so that it can count,
 * refuse and report work.
 */
export interface ChainOwner {
  /** Called before a task is added; throwing refuses the task. */
  accept(chain: Chain, task: Task): void;
  /** A task's first attempt starts. */
  taskStarted(chain: Chain): void;
  /** A failed attempt will be retried. */
  retried(chain: Chain): void;
  /** A task is over, after its last attempt. */
  taskSettled(chain: Chain, result: TaskResult, timedOut: boolean): void;
  /** The chain has run its last task. */
  finished(chain: Chain): void;
}

/** Why a chain stopped accepting tasks; it completes the message of a late `addTask`. */
export type ClosedBecause =
  | "the request's tasks have already run"
  | "the handler returned its response without adding any"
  | "the handler failed and its tasks were discarded"
  | "the response was not delivered and its tasks were skipped"
  | "its tasks were abandoned at a shutdown deadline";

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
  /** Set once the chain starts running: the settled results. */
  results: Promise<TaskResult[]> | undefined;
  /** Whether its tasks have started running. */
  started = false;
  /** The index of the task running now, or about to. */
  position = 0;
  /** The running task's attempt, from 1, and when it started (`performance.now()`). */
  attempt = 0;
  attemptStartedAt = 0;
  /** Whether the runner gave up on it at a deadline; the loop stops at its next step. */
  abandoned = false;
  /** Aborts the running attempt and ends any wait (timeout, retry delay) at once. */
  interrupt: ((reason: unknown) => void) | undefined;
  /** Method and URL of the request, captured while its handler ran. */
  request: RequestSummary | undefined;
  /** Whether the response reached the client; `undefined` when nobody said. */
  delivered: boolean | undefined;
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
    this.owner?.accept(this, task);
    this.tasks.push(task);
  }

  /** Stops accepting tasks. */
  close(because: ClosedBecause): void {
    this.#closedBecause ??= because;
  }

  /** The names of the tasks that have not finished, the running one included. */
  unfinished(): string[] {
    const names: string[] = [];
    for (let index = this.position; index < this.tasks.length; index++) {
      names.push(this.tasks[index]!.name);
    }
    return names;
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

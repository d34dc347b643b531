// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import type { RequestSummary, TaskResult } from "./task_info.ts";
import type { DefinedTask } from "./define_task.ts";
import { functionName } from "./_util.ts";

/** One added task: the function, its arguments and the name it is reported by. */
export interface Task {
  fn: (...args: unknown[]) => unknown;
  args: unknown[];
  /** Read from `fn` when first needed, by {@linkcode nameOf}. */
  name: string | undefined;
  /** Set for a task made by `defineTask`: `fn` then takes a context first. */
  defined: DefinedTask | undefined;
  /** The task added after this one. */
  next: Task | undefined;
}

/**
 * The name a task is reported by: its function's `name`, else `"anonymous"`.
 * Read on first use, since most tasks are never reported by name.
 */
export function nameOf(task: Task): string {
  return task.name ??= functionName(task.fn);
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
  taskSettled(chain: Chain, succeeded: boolean, timedOut: boolean): void;
  /** The chain has run its last task. */
  finished(chain: Chain): void;
  /**
   * Schedules a chain whose handler had returned when its first task was
   * added, once that task is in it.
   */
  scheduleReturned(chain: Chain): void;
  /**
   * Makes the chain that a task added to `closed` starts: a chain of its own
   * for the same request, which runs as soon as it can.
   */
  successor(closed: Chain): Chain;
}

/** Why a chain stopped accepting tasks; it completes the message of a late `addTask`. */
export type ClosedBecause =
  | "the request's tasks have already run"
  | "the request's tasks have been handed to the backend"
  | "the handler failed and its tasks were discarded"
  | "the response was not delivered and its tasks were skipped"
  | "its tasks were abandoned at a shutdown deadline";

/**
 * The runner's view of one request's tasks: the queue, where it is in its life,
 * and what reports need to know about the request. {@linkcode BackgroundTasks}
 * is its public face.
 */
export class Chain {
  /**
   * The first task not yet over: the one running, or the next to run. Tasks
   * form a linked list, so a chain of one task costs no array, and a task is
   * released as soon as it is over.
   */
  head: Task | undefined = undefined;
  #tail: Task | undefined = undefined;
  /** How many tasks have been added. */
  size = 0;
  /** How many are over: the index of `head`. */
  position = 0;
  /** Set by a wrapper right after creating the tasks, before its handler runs. */
  owner: ChainOwner | undefined = undefined;
  /**
   * The public face a wrapper handed out (a `BackgroundTasks`), for ambient
   * access while the chain runs.
   */
  facade: object | undefined = undefined;
  /** Set once the chain starts running. */
  results: Promise<TaskResult[]> | undefined = undefined;
  /**
   * Whether to keep each task's result for whoever awaits `results`: always
   * for `run()`; a runner's chains skip the allocation unless asked.
   */
  collect = false;
  /** Whether its tasks have started running. */
  started = false;
  /** The running task's attempt, from 1, and when it started (`performance.now()`). */
  attempt = 0;
  attemptStartedAt = 0;
  /** Whether the runner gave up on it at a deadline; the loop stops at its next step. */
  abandoned = false;
  /** Whether its head task counts as running in the runner's stats. */
  running = false;
  /** Aborts the running attempt and ends any wait (timeout, retry delay) at once. */
  interrupt: ((reason: unknown) => void) | undefined = undefined;
  /** Made on first use: with a task's index, the task's stable id. */
  id: string | undefined = undefined;
  /** Method and URL of the request, captured while its handler ran. */
  method: string | undefined = undefined;
  url: string | undefined = undefined;
  /** Whether the response reached the client; `undefined` when nobody said. */
  delivered: boolean | undefined = undefined;
  /**
   * Set once the handler has returned its response without adding a task:
   * a task added later (while the response is sent, or after) schedules the
   * chain then, with what is kept here.
   */
  returned = false;
  /** The request and the info of a chain that returned empty, until its first task. */
  source: Request | undefined = undefined;
  serveInfo: Deno.ServeHandlerInfo | undefined = undefined;
  /** The order in which the runner took it over, from 1; `drain()` compares it. */
  sequence = 0;
  /** Neighbours in the runner's list of live chains, in `sequence` order. */
  previousLive: Chain | undefined = undefined;
  nextLive: Chain | undefined = undefined;
  #request: RequestSummary | undefined;
  #closedBecause: ClosedBecause | undefined;

  /** Whether tasks can still be added. */
  get open(): boolean {
    return this.#closedBecause === undefined;
  }

  /** Whether it has neither started running nor been closed. */
  get idle(): boolean {
    return this.#closedBecause === undefined && !this.started;
  }

  /** The request as reports show it, built on first use. */
  get request(): RequestSummary | undefined {
    if (this.url === undefined) return undefined;
    return this.#request ??= { method: this.method!, url: this.url };
  }

  add(task: Task): void {
    if (this.#closedBecause !== undefined) {
      throw new Error(`Cannot add task as ${this.#closedBecause}`);
    }
    this.owner?.accept(this, task);
    if (this.#tail === undefined) this.head = task;
    else this.#tail.next = task;
    this.#tail = task;
    this.size++;
    if (this.returned) this.owner!.scheduleReturned(this);
  }

  /** Lets go of the head once its task is over; the next task becomes the head. */
  advance(): void {
    this.head = this.head!.next;
    if (this.head === undefined) this.#tail = undefined;
    this.position++;
  }

  /** Stops accepting tasks. */
  close(because: ClosedBecause): void {
    this.#closedBecause ??= because;
  }

  /** How many tasks are not over, the running one included. */
  get remaining(): number {
    return this.size - this.position;
  }

  /** The names of the tasks that are not over, the running one included. */
  unfinished(): string[] {
    const names: string[] = [];
    for (let task = this.head; task !== undefined; task = task.next) {
      names.push(nameOf(task));
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
  chainOf(tasks: object): Chain;
  /**
   * Told about each chain a wrapper creates, while set: how the testing
   * helper finds the chain of the request it makes.
   */
  created?: ((chain: Chain) => void) | undefined;
};

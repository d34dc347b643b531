// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// One added task, as a chain holds it: a function, its arguments, and its
// definition if any, in as few objects as the task allows.

import type { DefinedTask } from "../api/define_task.ts";
import { functionName } from "../util/_promise.ts";

/** What a task without arguments keeps: one array for them all. */
const NO_ARGS: readonly unknown[] = Object.freeze([]);

/**
 * One added task: the function, its arguments, and its definition if any.
 * Made by {@linkcode taskOf}.
 */
export interface Task {
  readonly fn: (...args: unknown[]) => unknown;
  /** Set for a task made by `defineTask`: `fn` then takes a context first. */
  readonly defined: DefinedTask | undefined;
  /** The task added after this one. */
  next: Task | undefined;
  /** The arguments, in an array that must not be changed. */
  readonly args: readonly unknown[];
  /** The index of the first argument `test` holds for, or -1; `args` would make an array. */
  findArgument(test: (argument: unknown) => boolean): number;
  /** Calls the function with the arguments, as a plain function. */
  call(): unknown;
}

// Two classes of their own rather than subclasses of one: a derived class
// costs its constructor a super() call (measured: 42 against 24 ns).

/** A task of one argument, kept as it is: the common task costs one object. */
class OneArgument implements Task {
  readonly fn: (...args: unknown[]) => unknown;
  readonly defined: DefinedTask | undefined;
  next: Task | undefined = undefined;
  #argument: unknown;

  constructor(
    fn: (...args: unknown[]) => unknown,
    argument: unknown,
    defined: DefinedTask | undefined,
  ) {
    this.fn = fn;
    this.defined = defined;
    this.#argument = argument;
  }

  get args(): readonly unknown[] {
    return [this.#argument];
  }

  findArgument(test: (argument: unknown) => boolean): number {
    return test(this.#argument) ? 0 : -1;
  }

  call(): unknown {
    const { fn } = this;
    return fn(this.#argument);
  }
}

/** A task of none or several arguments, kept in an array. */
class Arguments implements Task {
  readonly fn: (...args: unknown[]) => unknown;
  readonly defined: DefinedTask | undefined;
  next: Task | undefined = undefined;
  #args: readonly unknown[];

  constructor(
    fn: (...args: unknown[]) => unknown,
    args: readonly unknown[],
    defined: DefinedTask | undefined,
  ) {
    this.fn = fn;
    this.defined = defined;
    this.#args = args.length === 0 ? NO_ARGS : args;
  }

  get args(): readonly unknown[] {
    return this.#args;
  }

  findArgument(test: (argument: unknown) => boolean): number {
    return this.#args.findIndex(test);
  }

  call(): unknown {
    const { fn } = this;
    return fn(...this.#args);
  }
}

/** Makes the task that calls `fn` with `args` (which it keeps, unchanged). */
export function taskOf(
  fn: (...args: unknown[]) => unknown,
  args: readonly unknown[],
  defined?: DefinedTask,
): Task {
  return args.length === 1
    ? new OneArgument(fn, args[0], defined)
    : new Arguments(fn, args, defined);
}

/**
 * The task `waitUntil()` adds: it settles as the promise it tracks does.
 * Named so, and known to the runner: it adds no work, only a wait.
 */
export function waitUntil(promise: Promise<unknown>): Promise<unknown> {
  return promise;
}

/**
 * The name a task is reported by: its definition's, else its function's
 * `name`, else `"anonymous"`. Worked out when asked, since most tasks are
 * never reported.
 */
export function nameOf(task: Task): string {
  return task.defined?.name ?? functionName(task.fn);
}

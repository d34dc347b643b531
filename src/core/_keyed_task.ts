// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// A keyed task (defineTask's `key`): a task that also holds its key, worked
// out when the runner accepts it, after the checks of its arguments, and
// kept for its lane or for a backend. A task without a key never meets this
// file: it costs nothing more.

import { nameOf, type Task } from "./_task.ts";
import { escapeControls } from "../api/_describe_task.ts";
import type { DefinedTask } from "../api/define_task.ts";
import { describe } from "../util/_assert.ts";
import { errorText } from "../util/_error_text.ts";

/** The longest key, in UTF-16 code units (a string's `length`). */
export const MAX_KEY_LENGTH = 256;

/** A task made by a `defineTask` with a `key`, and its key once accepted. */
export class KeyedTask implements Task {
  readonly fn: (...args: unknown[]) => unknown;
  readonly defined: DefinedTask;
  next: Task | undefined = undefined;
  readonly args: readonly unknown[];
  /** Set by {@linkcode checkKey}, before the task joins anything. */
  key = "";

  constructor(defined: DefinedTask, args: readonly unknown[]) {
    this.fn = defined.fn as (...args: unknown[]) => unknown;
    this.defined = defined;
    this.args = args;
  }

  findArgument(test: (argument: unknown) => boolean): number {
    return this.args.findIndex(test);
  }

  call(): unknown {
    const { fn } = this;
    return fn(...this.args);
  }
}

/** Whether `task` is keyed: its definition has a `key`. */
export function isKeyed(task: Task): task is KeyedTask {
  return task.defined?.key !== undefined;
}

/**
 * Works out a keyed task's key with its own arguments, and keeps it;
 * returns the error to refuse the task with when the key function throws
 * or returns anything but a non-empty string of at most
 * {@linkcode MAX_KEY_LENGTH} characters.
 */
export function checkKey(task: KeyedTask): TypeError | undefined {
  const action = `Cannot add task "${
    escapeControls(nameOf(task))
  }" as its 'key'`;
  let key: unknown;
  try {
    key = task.defined.key!(...task.args);
  } catch (error) {
    return new TypeError(
      `${action} threw: ${escapeControls(errorText(error, "message"))}`,
      { cause: error },
    );
  }
  if (typeof key === "string" && key !== "" && key.length <= MAX_KEY_LENGTH) {
    task.key = key;
    return undefined;
  }
  return new TypeError(
    `${action} must return a non-empty string of at most ${MAX_KEY_LENGTH} characters: current value is ${
      typeof key === "string" && key.length > MAX_KEY_LENGTH
        ? `a string of ${key.length} characters`
        : describe(key)
    }`,
  );
}

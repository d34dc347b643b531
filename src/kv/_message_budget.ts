// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// A chain travels in one Deno KV queue message, which may weigh at most
// 64 KiB; a task that would take its chain past that must be refused as it
// is added, when the handler can still hear it, not lost at enqueue time.
// Measuring the message exactly costs microseconds per kilobyte on every
// addTask(), so each chain keeps a budget: most tasks are bounded cheaply,
// and the chain is measured exactly only when the bounds come near the limit.

import {
  messageSize,
  structuredSizeBound,
} from "../durable/_structured_size.ts";
import type { BackendTask } from "../api/task_backend.ts";
import type { RequestSummary } from "../api/task_info.ts";

/**
 * What a message holds besides the tasks and the request (its chain's id,
 * numbers and `traceparent`: under 250 bytes), with room to spare.
 */
export const ENVELOPE_BYTES = 512;

/** What a message holds of a task. */
type MessageTask = Readonly<Pick<BackendTask, "name" | "args">>;

/** What one chain's message weighs so far, against a limit. */
export class MessageBudget {
  readonly #limit: number;
  /** The chain's tasks so far. */
  readonly #tasks: MessageTask[] = [];
  /** Bytes of the tasks measured at the last exact measure, the envelope included. */
  #measured: number | undefined;
  /** Upper bounds of the tasks added since. */
  #bounded = 0;

  /** @param limit The most bytes the message may weigh. */
  constructor(limit: number) {
    this.#limit = limit;
  }

  /**
   * The most the message weighs as far as the budget knows: exact at the
   * last measure, plus the bounds of the tasks added since; 0 before the
   * first task.
   */
  get bytes(): number {
    return this.#measured === undefined ? 0 : this.#measured + this.#bounded;
  }

  /**
   * Counts a task into the message, or refuses it.
   *
   * @param task The task being added: only its name and arguments count.
   * @param request The request the chain's message carries.
   * @throws {TypeError} If the message would weigh more than the limit; the
   * task is then not counted.
   */
  add(task: MessageTask, request: RequestSummary | undefined): void {
    this.#measured ??= ENVELOPE_BYTES + structuredSizeBound(request);
    // What the message will hold of it, not the task's other fields.
    const counted: MessageTask = { name: task.name, args: task.args };
    const bound = structuredSizeBound(counted);
    this.#tasks.push(counted);
    if (this.#measured + this.#bounded + bound <= this.#limit) {
      this.#bounded += bound;
      return;
    }
    // Near the limit: measure the whole message as Deno KV will write it
    // (back-references number across all its tasks), at its first step and
    // at the next ones, which are enqueued from a delivered copy that
    // weighs more (see messageSize()).
    const bytes = ENVELOPE_BYTES +
      messageSize({ tasks: this.#tasks, request });
    if (bytes > this.#limit) {
      this.#tasks.pop();
      throw new TypeError(
        `Cannot add task "${task.name}" as the chain would weigh ${bytes} bytes, more than the ${this.#limit} a Deno KV message may hold`,
      );
    }
    this.#measured = bytes;
    this.#bounded = 0;
  }
}

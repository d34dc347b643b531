// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Giving a chain to a backend: what is handed over is a snapshot of the
// whole chain, taken when it moves to `storing` (a task added after starts a
// chain of its own). The backend keeps trying through passing faults until
// the chain is stored or the chain's signal aborts, when the runner gives up
// on it. Before its response, the response waits for the outcome; after,
// a chain that could not be stored is reported as failed.

import type { Chain, Task } from "./_chain.ts";
import type { BackendTask, TaskBackend } from "../api/task_backend.ts";
import type { Drains } from "./_drain.ts";
import { report } from "./_report.ts";
import type { Tally } from "./_tally.ts";
import type { Telemetry } from "./_telemetry.ts";
import { toPromise } from "../util/_promise.ts";
import type { TaskErrorHandler } from "../api/task_info.ts";

/** A task as a backend receives it; it must have been made by `defineTask`. */
export function backendTask(task: Task): BackendTask {
  const defined = task.defined!;
  return {
    name: defined.name,
    args: task.args,
    timeout: defined.timeout,
    retry: defined.retry,
    task: defined,
  };
}

/** The runner's books, which a hand-over keeps once it is over. */
export interface HandOverBooks {
  readonly tally: Tally;
  readonly drains: Drains;
  readonly onTaskError: TaskErrorHandler;
  /** Deno's telemetry, when on: the chain then carries its trace. */
  readonly telemetry: Telemetry | undefined;
  /** Forgets a chain that has ended, freeing its slot. */
  end(chain: Chain): void;
}

/**
 * Hands a `storing` chain to `backend`, and tells `books` how it ended,
 * unless the chain was given up on meanwhile. Before the response, the
 * promise settles as the store does, and rejects at once when the chain is
 * given up on; after, it never rejects.
 */
export function handOver(
  chain: Chain,
  backend: TaskBackend,
  beforeResponse: boolean,
  books: HandOverBooks,
): Promise<void> {
  const first = chain.position;
  const tasks: BackendTask[] = [];
  for (let task = chain.head; task !== undefined; task = task.next) {
    tasks.push(backendTask(task));
  }
  const { signal } = chain;
  books.tally.storing += tasks.length;
  let enqueued: Promise<void>;
  try {
    enqueued = backend.enqueue({
      // Made at its first task's accept().
      id: chain.id ??= crypto.randomUUID(),
      tasks,
      request: chain.request,
      delivered: chain.delivered,
      traceparent: books.telemetry?.traceparent(chain.trace),
    }, { signal });
  } catch (error) {
    enqueued = Promise.reject(error);
  }
  const settled = toPromise(enqueued).then(() => {
    // Given up on at a deadline: counted then.
    if (chain.state === "storing") stored(chain, tasks.length, books);
  }, (error) => {
    if (chain.state === "storing") {
      lost(chain, tasks, first, error, beforeResponse, books);
    }
    throw error;
  });
  // After the response, nobody waits for it.
  if (!beforeResponse) return settled.catch(() => {});
  return new Promise((resolve, reject) => {
    // Given up on inside enqueue() already: the store no longer counts.
    if (signal.aborted) {
      settled.catch(() => {});
      return reject(signal.reason);
    }
    signal.addEventListener("abort", () => reject(signal.reason), {
      once: true,
    });
    settled.then(resolve, reject);
  });
}

/** The chain is stored: its tasks are the backend's now. */
function stored(chain: Chain, count: number, books: HandOverBooks): void {
  chain.release();
  books.tally.storing -= count;
  books.tally.dropped("enqueued", count);
  books.drains.count(chain.sequence, "enqueued", count);
  chain.moveTo("handedOver");
  books.end(chain);
}

/**
 * The chain could not be stored: before its response, its tasks are
 * discarded (the handler fails with the error); after, they failed, each
 * reported.
 */
function lost(
  chain: Chain,
  tasks: readonly BackendTask[],
  first: number,
  error: unknown,
  beforeResponse: boolean,
  books: HandOverBooks,
): void {
  chain.release();
  books.tally.storing -= tasks.length;
  if (beforeResponse) {
    books.tally.dropped("discarded", tasks.length);
    chain.moveTo("discarded");
    books.end(chain);
    return;
  }
  books.tally.settled("failed", tasks.length);
  books.drains.count(chain.sequence, "failed", tasks.length);
  chain.moveTo("finished");
  // Forgotten before the reports, which may end drains that would give up
  // on it again.
  books.end(chain);
  tasks.forEach((task, index) =>
    report(books.onTaskError, error, {
      name: task.name,
      index: first + index,
      attempt: 0,
      request: chain.request,
      delivered: chain.delivered,
    })
  );
}

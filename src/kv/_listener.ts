// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The KV backend's listener, from its start to its close: a backend that
// runs its tasks in this process listens to the database's queue, says once
// which tasks other processes store that it lacks, and at a close waits for
// the deliveries under way, bounded by the shutdown's deadline even while
// another program holds the database's lock. What the backend offers the
// web process (accept(), enqueue(), failed(), retry()) is kv_backend.ts's.

import type { Consumer, StepEnd, StepWatch } from "./_consumer.ts";
import type { Keys } from "./_step.ts";
import { quoteNames, unknownNames } from "../durable/_unknown_tasks.ts";
import type { BackendCloseResult } from "../api/task_backend.ts";
import { CANNOT_LISTEN, queueRefusal } from "./_queue_support.ts";

/**
 * Starts the listener of a backend that runs its tasks in this process,
 * once it knows that the database can queue messages (a remote one cannot:
 * it then says so on stderr, and does not listen): each queue message goes
 * to `handle`, and a message that is not one of the backend's is said on
 * stderr. Says once which tasks processes store in this database that the
 * backend does not know.
 */
export function startListener(
  consumer: Consumer,
  handle: (message: unknown) => Promise<boolean>,
): void {
  const { kv, keys, config } = consumer;
  void queueRefusal(kv, keys.neverWritten()).then((refusal) => {
    if (consumer.closing) return;
    if (refusal !== undefined) {
      console.error(CANNOT_LISTEN);
      return;
    }
    kv.listenQueue(async (message) => {
      if (!await handle(message)) {
        console.error(
          "The KV backend received a message that is not one of its own; pass listen: false and route messages yourself",
        );
      }
    }).catch((error) => {
      if (!consumer.closing) {
        console.error("The KV backend stopped listening:", error);
      }
    });
    void sayUnknownTasks(kv, keys, config.registry);
  });
}

/**
 * Says once, when a backend starts listening, which tasks processes store
 * chains with in this database that it does not know: their steps would
 * fail (each reported as it does). Names no process wrote
 * for a week are stale, and not mentioned.
 */
async function sayUnknownTasks(
  kv: Deno.Kv,
  keys: Keys,
  registry: ReadonlyMap<string, unknown>,
): Promise<void> {
  const written: [string, number][] = [];
  try {
    for await (const entry of kv.list<number>({ prefix: keys.tasks() })) {
      written.push([String(entry.key.at(-1)), entry.value]);
    }
  } catch {
    // The database closed already.
    return;
  }
  const unknown = unknownNames(written, registry);
  if (unknown.length === 0) return;
  const one = unknown.length === 1;
  console.error(
    `The KV backend does not know ${one ? "task" : "tasks"} ${
      quoteNames(unknown)
    }, which processes store chains with in this database: add ${
      one ? "it" : "them"
    } to its 'tasks', or ${one ? "its steps fail" : "their steps fail"}`,
  );
}

/** A delivery under way. */
export interface Running {
  readonly watch: StepWatch;
  /** How its attempt ended, once written; `undefined` if none ran. */
  readonly settled: Promise<StepEnd | undefined>;
}

/**
 * Milliseconds a close at its signal waits for the steps it gives up on to
 * be written back, once their attempts have ended: a write takes a few,
 * unless another program holds the database's lock (then 5 s, and more).
 */
const HAND_BACK_GRACE = 500;

/**
 * What the deliveries under way at a close do, once each is written; or,
 * at `signal`, as soon as the attempts given up on have ended (at once) and
 * their hand-back is written, or HAND_BACK_GRACE has passed: the hand-back
 * is then written after, and if the process ends first, Deno KV delivers
 * the step again once the database is next opened, as after a crash. So a
 * shutdown's deadline bounds the close, even while another program holds
 * the database's write lock.
 */
export function closeWithin(
  deliveries: readonly Running[],
  signal: AbortSignal | undefined,
): Promise<BackendCloseResult> {
  const written = Promise.all(deliveries.map(({ settled }) => settled));
  if (signal === undefined) return written.then(closeResult);
  const { promise: cut, resolve } = Promise.withResolvers<void>();
  const onAbort = () => resolve();
  if (signal.aborted) resolve();
  else {
    signal.addEventListener("abort", onAbort, { once: true });
    void written.then(() => signal.removeEventListener("abort", onAbort));
  }
  const given = cut.then(async () => {
    const ends = await Promise.all(
      deliveries.map(({ watch }) => watch.attempt),
    );
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      written,
      new Promise((resolve) => timer = setTimeout(resolve, HAND_BACK_GRACE)),
    ]);
    clearTimeout(timer);
    return ends;
  });
  return Promise.race([written, given]).then(closeResult);
}

/** What the attempts running at a close did, counted. */
function closeResult(ends: (StepEnd | undefined)[]): BackendCloseResult {
  let succeeded = 0;
  let failed = 0;
  const handedBackTasks: Record<string, number> = {};
  let handedBack = 0;
  for (const end of ends) {
    if (end?.outcome === "succeeded") succeeded++;
    else if (end?.outcome === "failed") failed++;
    else if (end?.outcome === "handedBack") {
      handedBack++;
      handedBackTasks[end.name] = (handedBackTasks[end.name] ?? 0) + 1;
    }
  }
  return { succeeded, failed, handedBack, handedBackTasks };
}

// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The BullMQ worker's watch over its datastore, apart from what runs a job:
// a Worker that pauses while the datastore refuses its writes (BullMQ
// would try the next job at once, and spin), the wait for a datastore that
// is down at start, and what a worker says once at start that the web
// processes do differently (another number of shards, tasks it lacks).

import {
  type IQueueBackend,
  type JobProgress,
  type Processor,
  Worker,
  type WorkerOptions as BullmqOptions,
} from "npm:bullmq@^6";
import type { Datastore } from "./_shared.ts";
import { type ConnectionWatch, reconnectDelay } from "./_connection_watch.ts";
import { escapeControls } from "../api/_describe_task.ts";
import { delay } from "../core/_retry.ts";
import { quoteNames, unknownNames } from "../durable/_unknown_tasks.ts";

/**
 * Resolves once the datastore is prepared (see Datastore.prepare()), trying
 * again at the pace of reconnections and telling `watch` meanwhile; false
 * if `signal` aborted first.
 */
export async function prepared(
  datastore: Datastore,
  watch: ConnectionWatch,
  signal: AbortSignal,
): Promise<boolean> {
  for (let attempt = 1;; attempt++) {
    try {
      await datastore.prepare();
      watch.up(datastore);
      return true;
    } catch (error) {
      if (signal.aborted) return false;
      watch.down(datastore, error);
    }
    if (!await delay(reconnectDelay(attempt), signal)) return false;
  }
}

/**
 * Says once, at start, if the web processes store chains in another number
 * of shards than this worker consumes: a shard's hash tag depends on the
 * count, so the chains of theirs that this worker does not consume (with
 * more shards, possibly all of them) would wait for a worker that does.
 */
export async function checkShards(
  worker: WatchedWorker,
  datastore: Datastore,
  queueName: string,
  shards: number,
): Promise<void> {
  try {
    const stored = await datastore.shards(worker);
    if (stored !== undefined && stored !== shards) {
      console.error(
        `The BullMQ worker consumes ${shards} ${
          shards === 1 ? "shard" : "shards"
        } of queue "${
          escapeControls(queueName)
        }", but web processes store chains in ${stored}: start workers with 'shards: ${stored}', or the chains of the other shards never run`,
      );
    }
  } catch {
    // Closed, or the datastore is down: the watch says so.
  }
}

/**
 * Says once, at start, which tasks the web processes store that this worker
 * does not know: their jobs would fail (each reported as it does). Names no
 * web process wrote for a week are stale, and not mentioned.
 */
export async function checkTasks(
  worker: WatchedWorker,
  datastore: Datastore,
  queueName: string,
  registry: ReadonlyMap<string, unknown>,
): Promise<void> {
  try {
    const unknown = unknownNames(await datastore.names(worker), registry);
    if (unknown.length > 0) {
      console.error(
        `The BullMQ worker does not know ${
          unknown.length === 1 ? "task" : "tasks"
        } ${quoteNames(unknown)}, which web processes store in queue "${
          escapeControls(queueName)
        }": add ${unknown.length === 1 ? "it" : "them"} to its 'tasks', or ${
          unknown.length === 1 ? "its jobs" : "their jobs"
        } fail`,
      );
    }
  } catch {
    // Closed, or the datastore is down: the watch says so.
  }
}

/**
 * A Worker on either datastore that pauses while the datastore refuses its
 * writes.
 */
export class WatchedWorker extends Worker<
  unknown,
  null,
  string,
  IQueueBackend,
  JobProgress,
  unknown
> {
  readonly #datastore: Datastore;
  readonly #watch: ConnectionWatch;
  /** The watch's part for a refusal, while there is one. */
  readonly #refusal = {};
  #refused = false;
  /** Aborted by close(): ends the wait before a probe. */
  readonly #closing = new AbortController();

  constructor(
    name: string,
    processor: Processor<unknown, null, string, JobProgress>,
    options: BullmqOptions<unknown>,
    datastore: Datastore,
    watch: ConnectionWatch,
  ) {
    super(name, processor, options, datastore.factory);
    this.#datastore = datastore;
    this.#watch = watch;
  }

  /**
   * The datastore refused a command while connected (a read-only replica,
   * memory full): BullMQ tries the next job at once, and would spin, with
   * an error each time, until it takes writes again. So the worker pauses
   * (the tasks running go on), and a write probes the datastore at the pace
   * of a lost connection's reconnections (1 s, then up to 20 s apart),
   * until one is taken: the worker then resumes.
   */
  refused(error: unknown): void {
    this.#watch.down(this.#refusal, error);
    if (this.#refused) return;
    this.#refused = true;
    void this.pause(true).catch(() => {});
    void this.#probe();
  }

  async #probe(): Promise<void> {
    for (let attempt = 1;; attempt++) {
      if (!await delay(reconnectDelay(attempt), this.#closing.signal)) return;
      try {
        await this.#datastore.probe(this);
        break;
      } catch {
        // Still refused, or not reachable (which the watch tells).
      }
    }
    if (this.closing !== undefined) return;
    this.#refused = false;
    this.#watch.up(this.#refusal);
    void Promise.resolve(this.resume()).catch(() => {});
  }

  override close(force?: boolean): Promise<void> {
    this.#closing.abort();
    return super.close(force);
  }
}

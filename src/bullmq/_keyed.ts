// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The web side of keyed tasks on BullMQ: a chain's keyed tasks leave it and
// are stored each as a job of its own, in its lane (see _lanes.ts), in the
// shard its lane hashes to, so that a lane is whole in one shard; the
// chain's other tasks are stored as before, and neither waits for the
// other. What the stores deduplicated is the runner's to count.

import type { FlowJob } from "npm:bullmq@^6";
import {
  type Datastore,
  type JobData,
  jobData,
  jobOptions,
  KEEP_COMPLETED,
  keySlot,
} from "./_shared.ts";
import { type Jobs, storeGroups } from "./_shard.ts";
import type { ConnectionWatch } from "./_connection_watch.ts";
import type { GroupCommit } from "../durable/_group_commit.ts";
import type {
  BackendChain,
  BackendTask,
  EnqueueResult,
} from "../api/task_backend.ts";
import type { TaskInfo } from "../api/task_info.ts";
import { type KeyedJob, laneOf } from "./_lanes.ts";
import { openLanes } from "./_open_lanes.ts";

/** The indexes of a chain's keyed tasks, or undefined if it has none. */
export function keyedIndexes(chain: BackendChain): number[] | undefined {
  let indexes: number[] | undefined;
  const { tasks } = chain;
  for (let index = 0; index < tasks.length; index++) {
    if (tasks[index]!.key !== undefined) (indexes ??= []).push(index);
  }
  return indexes;
}

/** Stores keyed tasks, each in its lane's shard. */
export class KeyedStore {
  readonly #stores: GroupCommit<FlowJob>[];

  constructor(
    datastore: Datastore,
    queues: readonly Jobs[],
    queueName: string,
    watch: ConnectionWatch,
  ) {
    const lanes = openLanes(datastore, queueName);
    // A group commit per shard, retried through outages as chains are.
    this.#stores = queues.map((queue) =>
      storeGroups(datastore, queue, watch, {
        guard: () => undefined,
        add: (group) => lanes.add(queue, group as unknown as KeyedJob[]),
      })
    );
  }

  /**
   * Stores the tasks of `chain` at `indexes` (its keyed tasks), and says
   * which the stores deduplicated, if any.
   */
  async store(
    chain: BackendChain,
    indexes: readonly number[],
    signal: AbortSignal | undefined,
  ): Promise<EnqueueResult | undefined> {
    const jobs = indexes.map((index) =>
      keyedJob(chain, chain.tasks[index]!, index)
    );
    await Promise.all(jobs.map((job) => {
      const shard = keySlot(job.data.lane) % this.#stores.length;
      // A job of one, which the group commit sees as a flow without children.
      return this.#stores[shard]!(job as unknown as FlowJob, signal);
    }));
    const deduplicated: number[] = [];
    const replaced: TaskInfo[] = [];
    jobs.forEach((job, at) => {
      // None: a store sent again found it stored by the one before.
      const { skipped, replaced: waiting } = job.outcome ?? { skipped: false };
      if (skipped) deduplicated.push(indexes[at]!);
      // One of the chain's own, replaced by a later one of the same store:
      // it was never the backend's.
      if (waiting?.chain === chain.id) deduplicated.push(waiting.index);
      else if (waiting !== undefined) {
        replaced.push(infoOf(job.name, waiting));
      }
    });
    if (deduplicated.length === 0 && replaced.length === 0) return undefined;
    return { deduplicated, replaced };
  }

  /** Resolves once every keyed task handed over is stored or given up. */
  async idle(): Promise<void> {
    await Promise.all(this.#stores.map((store) => store.idle()));
  }
}

/** A keyed task as the job that keeps it in its lane. */
function keyedJob(
  chain: BackendChain,
  task: BackendTask,
  index: number,
): KeyedJob {
  const lane = laneOf(task.name, task.key!);
  const mode = task.onDuplicate ?? "queue";
  const delay = task.delay ?? 0;
  const data: JobData & { lane: string } = {
    ...jobData(chain, task, index),
    lane,
    // The worker waits for it too, for a job that takes the place of another
    // (see _lanes.ts): a replacement starts the delay again.
    ...(delay > 0 ? { due: Date.now() + delay } : {}),
  };
  return {
    name: task.name,
    data,
    mode,
    opts: {
      ...jobOptions(chain, task, index),
      // Kept a while once done, so that a store sent again finds it.
      removeOnComplete: { age: KEEP_COMPLETED },
      ...(delay > 0 ? { delay } : {}),
      // While it waits, a duplicate is not added ("skip"), or takes its
      // place ("replace", which starts the delay again): BullMQ's
      // deduplication by the lane, whose key the worker deletes as the job
      // starts.
      ...(mode === "queue" ? {} : {
        deduplication: mode === "skip"
          ? { id: lane }
          : { id: lane, replace: true },
      }),
    },
  };
}

/** The task a job's data stood for, as `onTaskEnd` is told it. */
function infoOf(name: string, data: JobData): TaskInfo {
  return {
    name,
    index: data.index,
    attempt: 0,
    id: `${data.chain}:${data.index}`,
    request: data.request,
    delivered: data.delivered,
  };
}

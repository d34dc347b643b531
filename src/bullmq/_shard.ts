// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// One shard of the BullMQ backend: its queue, and the transactions that
// store chains in it, retried through outages and cut connections, with
// what the shard's connections say about the datastore told to the
// backend's ConnectionWatch. The backend spreads chains over its shards
// and answers for them; this is where a group of chains meets Redis or
// PostgreSQL.

import {
  type BackendFactory,
  type FlowJob,
  FlowProducer,
  type FlowProducerOptions,
  type IQueueBackend,
  Queue,
  type QueueOptions,
} from "npm:bullmq@^6";
import type { Datastore, JobData, Owner } from "./_shared.ts";
import { type GroupCommit, groupCommit } from "../durable/_group_commit.ts";
import { jobStore, STALL, stallError } from "./_job_store.ts";
import {
  type ConnectionWatch,
  isConnectionError,
} from "./_connection_watch.ts";

/** Chains per transaction. */
const GROUP_SIZE = 100;

/** One shard: its queue, and the transactions that store chains in it. */
export interface Shard {
  readonly queue: Jobs;
  readonly flows: Flows;
  /** Stores a chain's jobs: a group commit for each kind of chain. */
  readonly store: GroupCommit<FlowJob>;
  /**
   * Stores a chain of one task, none of them keyed: on Redis, by a
   * `queue.add()` of its own, sent at once (see _job_store.ts); on
   * PostgreSQL, as `store` does.
   */
  readonly storeJob: GroupCommit<FlowJob>;
}

/** Opens a shard's connections; `watch` hears whether they are up. */
export function openShard(
  datastore: Datastore,
  queueName: string,
  prefix: string,
  watch: ConnectionWatch,
): Shard {
  const { connection, factory } = datastore;
  const flows = new Flows({ connection, prefix }, factory);
  const queue = new Jobs(queueName, { connection, prefix }, factory);
  // Connection errors are told once per outage by the watch, and reach the
  // chains through enqueue(); without a listener, ioredis would print each.
  watchOwner(flows, datastore);
  watchOwner(queue, datastore);
  // A chain of one task is one job, which BullMQ adds atomically on its
  // own (a script on Redis, a statement on PostgreSQL), without the MULTI a
  // flow needs and the QUEUED answer per job that comes with it. It carries
  // BullMQ's deduplication, by the chain's id (see chainFlow()): what adds
  // the job writes the key too, and keeps it when the job completes (a key
  // with a ttl outlives its job), so a store sent again, by this backend or
  // by ioredis on its own, adds nothing. Deleted once answered. A chain of
  // more tasks is a flow, its jobs added in one transaction. Each kind has
  // a group commit of its own, so that a group is always stored by one
  // call, whose failure the group commit can reason about.
  const storeJobs = storeGroups(datastore, queue, watch, {
    guard: (flow) => chainOf(flow),
    async add(group) {
      // A closing queue would wait for a connection that never comes.
      if (queue.closing !== undefined) throw new ClosingError();
      const added = await queue.addBulk(
        group.map(({ name, data, opts }) => ({ name, data, opts: opts! })),
      );
      if (added.length !== group.length) throw new ClosingError();
    },
  });
  // On Redis, a chain of one task is added at once by a call of its own
  // (see _job_store.ts), and only what fails is left to the group commit.
  // On PostgreSQL, the one-task chains handed over together are one
  // statement. A chain whose tasks but one are keyed keeps the group commit
  // for that one's job, as before: the direct add was measured for chains
  // without keys (bench/README.md).
  const storeJob = datastore.addsEach
    ? jobStore(queue, datastore, watch, storeJobs, splits)
    : storeJobs;
  // A flow's jobs stay KEEP_COMPLETED seconds once done (see chainFlow()).
  const storeFlows = storeGroups(datastore, queue, watch, {
    guard: () => undefined,
    async add(group) {
      const added = await flows.addBulk(group);
      // A closing FlowProducer returns without storing anything.
      if (added?.length !== group.length) throw new ClosingError();
    },
  });
  const store = (flow: FlowJob, signal?: AbortSignal): Promise<void> =>
    flow.children === undefined
      ? storeJobs(flow, signal)
      : storeFlows(flow, signal);
  store.idle = async (): Promise<void> => {
    // The job store's idle waits for the group commit it falls back on.
    await Promise.all([storeJob.idle(), storeFlows.idle()]);
  };
  return { queue, flows, store, storeJob };
}

/** How one kind of chain is stored. */
export interface StoreKind {
  /** Stores a group of chains of this kind. */
  add(group: FlowJob[]): Promise<void>;
  /**
   * The deduplication id, if any, that shows the chain was stored until its
   * store is answered, even once its jobs are done and removed.
   */
  guard(flow: FlowJob): string | undefined;
}

/** The id of the chain a flow (or its data) belongs to. */
function chainOf(flow: Pick<FlowJob, "data">): string {
  return (flow.data as JobData).chain;
}

/**
 * A group commit of chains that `kind` stores, retried through outages and
 * cut connections. Once a group is stored, the guards of its chains are
 * forgotten: nothing stores them again.
 */
export function storeGroups(
  datastore: Datastore,
  queue: Jobs,
  watch: ConnectionWatch,
  kind: StoreKind,
): GroupCommit<FlowJob> {
  // Chains handed over together go in one call: ioredis builds a pipeline
  // per call, which cost more than the chain itself.
  // A group is split only for what one chain's data can cause (JSON.stringify
  // throws a TypeError or a RangeError, before anything is sent). Anything
  // else, such as a connection cut between MULTI and EXEC (ioredis's
  // AbortError), is not the chains' fault: the call stored none, some or
  // all of the chains (Redis discards a transaction it did not execute; a
  // connection may be lost after EXEC ran, or in the middle of a pipeline,
  // each of whose jobs is added atomically; PostgreSQL commits a group's
  // statement whole or not at all, and may lose the connection after its
  // COMMIT). So the group is stored again, less the chains that were stored.
  const store = groupCommit<FlowJob>(
    async (group, retrying) => {
      await watched(async () => {
        // On PostgreSQL, reached and BullMQ's schema made, at first.
        await datastore.prepare();
        const flowsToAdd = retrying
          ? await unstored(queue, kind, group)
          : group;
        if (flowsToAdd.length > 0) await kind.add(flowsToAdd);
      });
      const guards = group.flatMap((flow) => kind.guard(flow) ?? []);
      if (guards.length > 0) datastore.forget(queue, guards);
    },
    GROUP_SIZE,
    {
      split: splits,
      retry: (error, failures) =>
        error instanceof ClosingError ? undefined : retryDelay(failures),
    },
  );

  async function watched(add: () => Promise<void>): Promise<void> {
    // A store the datastore leaves unanswered (a server that hangs, a
    // network that drops packets) is an outage too, though no error comes.
    const stall = setTimeout(
      () => watch.down(store, stallError(datastore)),
      STALL,
    );
    try {
      await add();
    } catch (error) {
      // A store the datastore refuses while connected (out of memory, a
      // replica made read-only, a command timeout), or cannot take yet
      // (PostgreSQL without BullMQ's schema), is an outage too; it ends
      // when a store succeeds, or when no chain is left waiting for one.
      if (!(error instanceof ClosingError) && !splits(error)) {
        watch.down(store, error);
        void store.idle().then(() => watch.up(store));
        if (isConnectionError(error)) datastore.unreachable(error);
      }
      throw error;
    } finally {
      clearTimeout(stall);
    }
    watch.up(store);
  }

  return store;
}

/**
 * Whether a store's error may be one chain's fault: JSON.stringify throws a
 * TypeError or a RangeError for data it cannot write.
 */
function splits(error: unknown): boolean {
  return error instanceof TypeError || error instanceof RangeError;
}

/**
 * The chains of `group` that were not stored. A store whose answer was
 * lost may have stored its chains, and workers may have run their jobs
 * since: adding such a chain again would run its tasks twice (and a first
 * task added again would hold back the next one). A chain was stored if
 * its guard is there (a chain of one task, whose job is removed once done)
 * or one of its jobs is (a flow's are kept KEEP_COMPLETED seconds once
 * done).
 */
async function unstored(
  queue: Jobs,
  kind: StoreKind,
  group: FlowJob[],
): Promise<FlowJob[]> {
  const { backend } = queue;
  const stored = await Promise.all(group.map(async (flow) => {
    const jobs: string[] = [];
    for (let job: FlowJob | undefined = flow; job; job = job.children?.[0]) {
      jobs.push(job.opts!.jobId!);
    }
    const guard = kind.guard(flow);
    const found = await Promise.all([
      guard === undefined
        ? false
        : backend.getDeduplicationJobId(guard).then((id) => id !== null),
      ...jobs.map((id) =>
        backend.getJobData(id).then((data) => data !== undefined)
      ),
    ]);
    return found.some(Boolean);
  }));
  return group.filter((_, index) => !stored[index]);
}

/** A Queue that can close while its datastore is unreachable. */
export class Jobs extends Queue<
  unknown,
  unknown,
  string,
  unknown,
  unknown,
  string,
  IQueueBackend,
  unknown
> {
  constructor(
    name: string,
    options: QueueOptions<unknown>,
    factory: BackendFactory<IQueueBackend, unknown>,
  ) {
    super(name, options, factory);
  }

  /**
   * Closes the connection without QUIT, which ioredis would queue behind a
   * pipeline still waiting for Redis, one whose chains were all given up
   * by their signals. Nothing else is in flight once the store is idle.
   * A connection the caller owns stays open.
   */
  closeNow(): Promise<void> {
    return this.closing ??= this.backend.close(true);
  }
}

/** A FlowProducer that can close while its datastore is unreachable. */
class Flows extends FlowProducer<IQueueBackend, unknown> {
  /** Public here, as a Queue's is: its datastore watches it. */
  declare public backend: IQueueBackend;

  constructor(
    options: FlowProducerOptions<unknown>,
    factory: BackendFactory<IQueueBackend, unknown>,
  ) {
    super(options, factory);
  }

  /**
   * Closes the connection without QUIT, which ioredis would queue behind a
   * transaction still waiting for Redis, one whose chains were all given up
   * by their signals. Nothing else is in flight once the store is idle.
   * A connection the caller owns stays open.
   */
  closeNow(): Promise<void> {
    return this.closing ??= this.backend.close(true);
  }
}

/**
 * Tells the datastore when the connection of `owner` (a queue or a flow
 * producer, which emits its connection's errors) is lost, and lets it tell
 * the watch when it is back. A close the owner asked for is no loss.
 */
function watchOwner(
  owner: Owner & {
    on(event: "error", listener: (error: Error) => void): unknown;
  },
  datastore: Datastore,
): void {
  owner.on("error", (error) => {
    if (owner.closing === undefined && isConnectionError(error)) {
      datastore.lost(owner, error);
    }
  });
  datastore.watch(owner, () => false);
}

/** A FlowProducer closed by `close()` stored nothing. */
class ClosingError extends Error {
  constructor() {
    super("BullMQ stored no chain: its connection is closing");
  }
}

/**
 * Milliseconds before storing a group again after `failures` failed attempts
 * in a row: 100 ms doubling up to 5 s, less up to half of it at random, so
 * that the web processes a restart of the datastore cut off do not all come
 * back at once.
 */
function retryDelay(failures: number): number {
  return Math.min(5_000, 100 * 2 ** (failures - 1)) * (1 - Math.random() / 2);
}

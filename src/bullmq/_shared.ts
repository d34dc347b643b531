// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// What the BullMQ backend (web side) and its workers share: the shape of a
// job, what differs between the datastores (see _datastore.ts), the name of
// the backoff strategy, the checks of the options both take, the connection
// to Redis as BullMQ takes it, and where each shard's keys live.

// BullMQ 6 loads ioredis only when it makes a Redis connection, as an
// optional peer dependency that Deno resolves only if something imports it.
import "npm:ioredis@^5";
import type {
  BackendFactory,
  ConnectionOptions,
  IQueueBackend,
} from "npm:bullmq@^6";
import { describe } from "../util/_assert.ts";
import { type Envelope, envelope } from "../durable/_envelope.ts";
import type { BackendChain, BackendTask } from "../api/task_backend.ts";

/** What a job carries. */
export interface JobData extends Envelope {
  chain: string;
  index: number;
  args: unknown[];
  /** A keyed task's lane: its name and key (see _lanes.ts). */
  lane?: string;
  /** When a keyed task with a `delay` may start, in epoch milliseconds. */
  due?: number;
}

/** The data of the job that keeps `task`, the `index`th of `chain`. */
export function jobData(
  chain: BackendChain,
  task: BackendTask,
  index: number,
): JobData {
  return {
    chain: chain.id,
    index,
    args: [...task.args],
    ...envelope(chain),
  };
}

/**
 * The options every job that keeps a task carries, whatever else its store
 * adds: its id (`<chain>.<index>`, which `retry()` parses), the attempts
 * its retry policy allows, the backoff strategy that computes their delays,
 * and a failed job kept.
 */
export function jobOptions(
  chain: BackendChain,
  task: BackendTask,
  index: number,
): {
  jobId: string;
  attempts: number;
  backoff: { type: string };
  removeOnFail: boolean;
} {
  return {
    jobId: `${chain.id}.${index}`,
    attempts: task.retry?.maxAttempts ?? 1,
    backoff: { type: BACKOFF },
    removeOnFail: false,
  };
}

/** A Queue, FlowProducer or Worker, whose connection a datastore watches. */
export interface Owner {
  readonly backend: IQueueBackend;
  readonly closing: Promise<void> | undefined;
}

/** What differs between Redis and PostgreSQL, for one backend or worker. */
export interface Datastore {
  /** As messages name it: "Redis" or "PostgreSQL". */
  readonly name: "Redis" | "PostgreSQL";
  /**
   * Whether a chain of one task is stored by a `queue.add()` of its own, at
   * once, whatever is in flight (Redis: ioredis pipelines the commands on
   * its connection), rather than by one `queue.addBulk()` per group, one
   * group at a time (PostgreSQL: one statement, one commit per group).
   */
  readonly addsEach: boolean;
  /** The `connection` BullMQ's classes are made with. */
  readonly connection: unknown;
  /** The factory of their backends. */
  readonly factory: BackendFactory<IQueueBackend, unknown>;
  /** Options a Worker adds to ours. */
  readonly workerOptions: { runRetryDelay?: number };
  /**
   * Resolves once BullMQ's queues can be used: at once on Redis; on
   * PostgreSQL, once it was reached and BullMQ's schema is there (made if
   * it was not). Rejects if it cannot be, such as while PostgreSQL is down;
   * each call tries again, until one succeeds.
   */
  prepare(): Promise<void>;
  /** Tells the watch when `owner`'s connection closes and comes back. */
  watch(owner: Owner, closed: () => boolean): void;
  /**
   * `source` (a queue, flow producer or worker) lost its connection with
   * `error`: the watch hears it, and hears that it is back once the
   * datastore can be reached again.
   */
  lost(source: object, error: unknown): void;
  /**
   * A store failed with `error`, a connection error. On Redis, nothing more:
   * its connections' events tell the watch. On PostgreSQL, which has no such
   * events, the watch hears that it is down until it answers again, whether
   * or not chains still wait to be stored.
   */
  unreachable(error: unknown): void;
  /**
   * Deletes the deduplication keys of `chains`, whose stores were answered,
   * without waiting: what is left (the datastore went away) expires.
   */
  forget(queue: Owner, chains: string[]): void;
  /**
   * Writes, for the workers to check theirs against, how many shards the
   * web processes store chains in and the names of their tasks, with when.
   */
  announce(
    queue: Owner,
    names: readonly string[],
    shards: number,
    now: number,
  ): Promise<void>;
  /** The shard count web processes wrote, if any. */
  shards(queue: Owner): Promise<number | undefined>;
  /** The task names web processes wrote, each with when they last did. */
  names(queue: Owner): Promise<[string, number][]>;
  /** A small write, to learn whether the datastore takes writes again. */
  probe(worker: Owner): Promise<void>;
  /** Closes what the datastore opened itself, once its owners are closed. */
  close(): Promise<void>;
}

/** The backoff strategy whose delays the task's retry policy computes. */
export const BACKOFF = "background-tasks";

/** Throws a `TypeError` unless `name` is a non-empty string. */
export function assertQueueName(name: unknown, action: string): void {
  if (typeof name !== "string" || name === "") {
    throw new TypeError(
      `${action} as 'queue' must be a non-empty string: current value is ${
        describe(name)
      }`,
    );
  }
}

/**
 * Throws a `TypeError` unless `prefix` is a non-empty string without braces
 * (the backend puts it in a hash tag of its own).
 */
export function assertPrefix(prefix: unknown, action: string): void {
  if (typeof prefix !== "string" || prefix === "" || /[{}]/.test(prefix)) {
    throw new TypeError(
      `${action} as 'prefix' must be a non-empty string without braces: current value is ${
        describe(prefix)
      }`,
    );
  }
}

/**
 * Where the web processes write how many shards they store chains in, for
 * workers to check theirs against.
 */
export function shardsKey(prefix: string, queue: string): string {
  return `${prefix}:${queue}:shards`;
}

/**
 * Where the web processes write the names of the tasks they store, each
 * with when they last did (milliseconds since the epoch), for workers to
 * check theirs against.
 */
export function tasksKey(prefix: string, queue: string): string {
  return `${prefix}:${queue}:tasks`;
}

/**
 * Milliseconds the deduplication key of a chain of one task lives at most.
 * The backend deletes it once the store's answer has arrived, after which
 * nothing can store the chain again: this only bounds how long a store
 * retried through an outage stays idempotent, and what a web process that
 * died with a store unanswered leaves behind.
 */
export const DEDUPLICATION_TTL = 24 * 60 * 60 * 1000;

/**
 * Seconds the jobs of a chain of more than one task are kept once done, so
 * that a store of the chain sent again (by the backend or by ioredis, after
 * its answer was lost) finds them and adds nothing: BullMQ refuses
 * deduplication on a flow's parent jobs.
 */
export const KEEP_COMPLETED = 60;

/**
 * The connection as BullMQ takes it: a Redis URL (`redis://`, `rediss://`
 * for TLS, with user, password and database) becomes `{ url }`, which BullMQ
 * hands to ioredis; ioredis options and instances pass as they are.
 */
export function connectionOptions(
  connection: unknown,
  action: string,
  worker = false,
): ConnectionOptions {
  if (typeof connection === "string") {
    let url: URL | undefined;
    try {
      url = new URL(connection);
    } catch {
      // Said below.
    }
    if (url?.protocol !== "redis:" && url?.protocol !== "rediss:") {
      throw new TypeError(
        `${action} as 'connection' must be a redis://, rediss://, postgres:// or postgresql:// URL: current value is ${
          describe(redact(connection))
        }`,
      );
    }
    return { url: connection };
  }
  if (
    typeof connection !== "object" || connection === null ||
    Array.isArray(connection)
  ) {
    throw new TypeError(
      `${action} as 'connection' must be a Redis or PostgreSQL URL, ioredis options, an ioredis instance or a pg.Pool: current value is ${
        describe(connection)
      }`,
    );
  }
  // A worker's blocking connection is a copy of an instance, with its
  // options: BullMQ would throw its own words; these say where.
  const instance = connection as {
    isCluster?: unknown;
    duplicate?: unknown;
    options?: {
      maxRetriesPerRequest?: unknown;
      redisOptions?: { maxRetriesPerRequest?: unknown };
    };
  };
  if (worker && typeof instance.duplicate === "function") {
    const value = instance.isCluster
      ? instance.options?.redisOptions?.maxRetriesPerRequest
      : instance.options?.maxRetriesPerRequest;
    if (value !== null) {
      throw new TypeError(
        `${action} as the ioredis instance in 'connection' must be made with maxRetriesPerRequest: null (for a Cluster, in its redisOptions), as BullMQ's workers need: current value is ${
          describe(value)
        }`,
      );
    }
  }
  return connection as ConnectionOptions;
}

/**
 * A URL-like string with what might be a password hidden, for a message:
 * the value of a query parameter whose name ends in `password` (node-postgres
 * and ioredis take the query's parameters as options: `?password=`,
 * ioredis's `?sentinelPassword=`), then everything between the scheme (if
 * any) and the last `@`, since a password may hold a `/` (base64 access keys
 * do) or an `@`, and the string may have no scheme at all.
 */
export function redact(text: string): string {
  const hidden = text.replace(/([?&][^&#=]*password=)[^&#]*/gi, "$1***");
  const at = hidden.lastIndexOf("@");
  if (at === -1) return hidden;
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(hidden)?.[0] ?? "";
  return `${scheme}***${hidden.slice(at)}`;
}

/** Hash slots in a Redis Cluster. */
const SLOTS = 16_384;

/**
 * The BullMQ prefix of each of `shards` shards. A Cluster keeps a key where
 * its hash tag (the part in braces) says, and BullMQ's scripts touch many
 * keys of a queue at once, so each shard's keys share one tag. Shard `i`'s
 * tag is the first of `<prefix>:<i>:<k>` (k = 0, 1, …) whose slot lies in
 * the `i`-th of `shards` equal ranges of slots: on a Cluster whose nodes own
 * equal ranges, as `redis-cli --cluster create` makes them, the shards
 * spread evenly over the nodes. Web processes and workers compute the same.
 */
export function shardPrefixes(prefix: string, shards: number): string[] {
  return Array.from({ length: shards }, (_, shard) => {
    const low = Math.floor(shard * SLOTS / shards);
    const high = Math.floor((shard + 1) * SLOTS / shards);
    for (let k = 0;; k++) {
      const tag = `${prefix}:${shard}:${k}`;
      const slot = keySlot(tag);
      if (slot >= low && slot < high) return `{${tag}}`;
    }
  });
}

/** The hash slot of a key without a hash tag, as Redis Cluster computes it. */
export function keySlot(key: string): number {
  return crc16(new TextEncoder().encode(key)) % SLOTS;
}

/** CRC-16/XMODEM, the checksum Redis Cluster hashes keys with. */
function crc16(bytes: Uint8Array): number {
  let crc = 0;
  for (const byte of bytes) {
    crc ^= byte << 8;
    for (let bit = 0; bit < 8; bit++) {
      crc = crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1;
    }
    crc &= 0xffff;
  }
  return crc;
}

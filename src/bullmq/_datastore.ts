// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Where BullMQ keeps the queues: Redis, or PostgreSQL through BullMQ's own
// PostgreSQL backend. The backend, its shards and the workers use BullMQ's
// classes the same way on both; what differs (the connection, how it is
// watched, the few keys this package writes beside BullMQ's) is behind
// `Datastore` (in _shared.ts). This file holds the choice and Redis's side;
// _postgres.ts holds PostgreSQL's.

import {
  type BackendFactory,
  createRedisBackend,
  type IQueueBackend,
  type PgPool,
  type RedisClient,
  type RedisQueueBackend,
} from "npm:bullmq@^6";
import {
  connectionOptions,
  type Datastore,
  type Owner,
  shardsKey,
  tasksKey,
} from "./_shared.ts";
import type { ConnectionWatch } from "./_connection_watch.ts";
import { openPostgres, postgresConnection } from "./_postgres.ts";
import { describe } from "../util/_assert.ts";

/** A connection as given, once checked: where BullMQ keeps the queues. */
export type Connection =
  | { readonly datastore: "Redis"; readonly options: object }
  | {
    readonly datastore: "PostgreSQL";
    /** A postgres:// URL, or a pg.Pool that the caller owns. */
    readonly target: string | PgPool;
    /** What to hide in messages. */
    readonly password: string | undefined;
  };

/**
 * Checks `connection` as `bullmqBackend()` and `bullmqWorker()` take it: a
 * postgres:// or postgresql:// URL, or a pg.Pool, is PostgreSQL; anything
 * else is Redis, as `connectionOptions()` checks it.
 */
export function parseConnection(
  connection: unknown,
  action: string,
  worker = false,
): Connection {
  // ioredis would take a URL object for options and, its fields being
  // getters it does not see, connect to 127.0.0.1:6379 instead.
  if (connection instanceof URL) {
    throw new TypeError(
      `${action} as 'connection' must be the URL as a string (its href), not a URL object: current value is ${
        describe(connection)
      }`,
    );
  }
  const postgres = postgresConnection(connection, action, worker);
  if (postgres !== undefined) return { datastore: "PostgreSQL", ...postgres };
  return {
    datastore: "Redis",
    options: connectionOptions(connection, action, worker),
  };
}

/**
 * Throws a `TypeError` if an option that means something only on Redis
 * (`shards`, `prefix`) is given with a PostgreSQL connection, rather than
 * ignore what its user meant by it.
 */
export function assertRedisOnly(
  connection: Connection,
  options: { readonly shards?: unknown; readonly prefix?: unknown },
  action: string,
): void {
  if (connection.datastore !== "PostgreSQL") return;
  if (options.shards !== undefined) {
    throw new TypeError(
      `${action} as 'shards' means nothing on PostgreSQL, where a queue is rows of BullMQ's tables, not keys on the nodes of a Redis Cluster: remove it`,
    );
  }
  if (options.prefix !== undefined) {
    throw new TypeError(
      `${action} as 'prefix' means nothing on PostgreSQL, where BullMQ keeps every queue in its "bullmq" schema: remove it, and tell queues apart by 'queue'`,
    );
  }
}

/** The queue's name and prefix, as the backend and workers are given them. */
export interface QueueName {
  readonly queue: string;
  readonly prefix: string;
}

/**
 * Opens the datastore of `connection` for the queue `name`, telling `watch`
 * whether it is up.
 */
export function openDatastore(
  connection: Connection,
  name: QueueName,
  watch: ConnectionWatch,
): Datastore {
  return connection.datastore === "Redis"
    ? openRedis(connection.options, name, watch)
    : openPostgres(connection.target, name.queue, watch);
}

/** The Redis client of a queue, flow producer or worker on Redis. */
function client(owner: Owner): Promise<RedisClient> {
  return (owner.backend as RedisQueueBackend).client;
}

/**
 * Redis: BullMQ's own backend, and keys of this package beside BullMQ's,
 * under the backend's prefix and queue name, outside of any shard's hash tag.
 */
function openRedis(
  options: object,
  { queue: queueName, prefix }: QueueName,
  watch: ConnectionWatch,
): Datastore {
  return {
    name: "Redis",
    addsEach: true,
    connection: options,
    factory: createRedisBackend as BackendFactory<IQueueBackend, unknown>,
    workerOptions: {},
    prepare: () => Promise.resolve(),
    watch(owner, closed) {
      // Redis coming back before ioredis's first reconnection fails emits
      // no error, but the connection did close.
      const { connection } = owner.backend as RedisQueueBackend;
      connection.on("close", () => {
        if (!closed() && owner.closing === undefined) {
          watch.down(owner, new Error("the connection to Redis closed"));
        }
      });
      connection.on("ready", () => watch.up(owner));
    },
    lost(source, error) {
      // Back once the connection is ready (see watch()).
      watch.down(source, error);
    },
    unreachable() {},
    forget(queue, chains) {
      const keys = chains.map((chain) => queue.backend.toKey(`de:${chain}`));
      void client(queue).then((redis) => redis.del(...keys)).catch(() => {});
    },
    async announce(queue, names, shards, now) {
      const redis = await client(queue);
      await Promise.all([
        redis.set(shardsKey(prefix, queueName), String(shards)),
        names.length === 0 ? undefined : redis.hset(
          tasksKey(prefix, queueName),
          Object.fromEntries(names.map((task) => [task, now])),
        ),
      ]);
    },
    async shards(queue) {
      const redis = await client(queue);
      const stored = Number(await redis.get(shardsKey(prefix, queueName)));
      return stored > 0 ? stored : undefined;
    },
    async names(queue) {
      const redis = await client(queue);
      const written = await redis.hgetall(tasksKey(prefix, queueName));
      return Object.entries(written).map(([task, at]) => [task, Number(at)]);
    },
    async probe(worker) {
      await (await client(worker)).set(worker.backend.toKey("probe"), "1", {
        PX: 1_000,
      });
    },
    close: () => Promise.resolve(),
  };
}

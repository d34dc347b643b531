// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// BullMQ on PostgreSQL, through BullMQ's own PostgreSQL backend: the
// connection (a postgres:// URL, or a pg.Pool the caller owns; the pool
// BullMQ is given is in _pg_pool.ts), BullMQ's schema made by whichever of
// the web processes and workers starts first, and what the backend and
// workers write beside BullMQ's tables, through BullMQ's queue metadata.

import {
  assertSchemaCompatibility,
  type BackendFactory,
  createPostgresBackend,
  DEFAULT_SCHEMA,
  type IQueueBackend,
  LATEST_SCHEMA_VERSION,
  type PgPool,
  type PgPoolClient,
  type PostgresConnectionOptions,
  type PostgresQueueBackend,
  runMigrations,
  SchemaMigrationRequiredError,
} from "npm:bullmq@^6";
import { describe } from "../util/_assert.ts";
import { delay } from "../core/_retry.ts";
import { type ConnectionWatch, reconnectDelay } from "./_connection_watch.ts";
import { type Datastore, redact } from "./_shared.ts";
import { openPool } from "./_pg_pool.ts";

/**
 * The PostgreSQL connection of `connection`, or undefined if it is not one;
 * `worker` when a worker is to use it.
 */
export function postgresConnection(
  connection: unknown,
  action: string,
  worker = false,
): { target: string | PgPool; password: string | undefined } | undefined {
  if (typeof connection === "string") {
    if (!/^postgres(?:ql)?:\/\//i.test(connection)) return undefined;
    let url: URL;
    try {
      url = new URL(connection);
    } catch {
      // node-postgres would repeat the URL, password included, in its error.
      throw new TypeError(
        `${action} as 'connection' must be a valid postgres:// or postgresql:// URL: current value is ${
          describe(redact(connection))
        }`,
      );
    }
    // node-postgres takes a password parameter over the URL's own.
    const password = url.searchParams.get("password") ??
      safeDecode(url.password);
    return {
      target: connection,
      password: password === "" ? undefined : password,
    };
  }
  if (typeof connection !== "object" || connection === null) return undefined;
  const value = connection as Record<string, unknown>;
  if ("connectionString" in value) {
    throw new TypeError(
      `${action} as 'connection' must be the postgres:// URL itself, or a pg.Pool, not node-postgres options: current value is ${
        describe(connection)
      }`,
    );
  }
  const looksLikePg = typeof value["connect"] === "function" &&
    typeof value["query"] === "function" &&
    typeof value["end"] === "function";
  if (!looksLikePg) return undefined;
  if (typeof value["totalCount"] !== "number") {
    throw new TypeError(
      `${action} as 'connection' must be a pg.Pool, not a single client: current value is ${
        describe(connection)
      }`,
    );
  }
  // A worker's pool of one connection would give it to BullMQ's LISTEN, and
  // every query would wait for it: no task would ever run, and nothing said.
  const max = (value["options"] as { max?: unknown } | undefined)?.max;
  if (worker && typeof max === "number" && max < 2) {
    throw new RangeError(
      `${action} as the pg.Pool in 'connection' must allow at least 2 connections ('max'), as BullMQ's worker holds one for LISTEN and runs its queries on the others: current value is ${max}`,
    );
  }
  return { target: connection as unknown as PgPool, password: undefined };
}

/** A URL's password as node-postgres reads it, or as it is if malformed. */
function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** Field names under which web processes write their task names. */
const TASK_FIELD = "background-tasks:task:";

/**
 * PostgreSQL: BullMQ's PostgreSQL backend on one pool: a pool of this
 * package's for a URL (ended by `close()`), or the caller's (left open, as
 * it was found).
 */
export function openPostgres(
  target: string | PgPool,
  queueName: string,
  watch: ConnectionWatch,
): Datastore {
  const closing = new AbortController();
  const { pool, close: closePool } = openPool(target);

  /** The deletions of deduplication keys under way (see forget()). */
  const forgets = new Set<Promise<void>>();
  /** The sources that lost PostgreSQL, up once it answers a probe. */
  const lostSources = new Set<unknown>();
  /** The source of the stores' connection errors. */
  const unreachable = {};
  let probing = false;
  async function probeUntilReached(): Promise<void> {
    if (probing) return;
    probing = true;
    try {
      // At once first: a connection that was cut while PostgreSQL is there
      // is made again as soon as asked.
      for (let attempt = 0; lostSources.size > 0; attempt++) {
        if (
          attempt > 0 && !await delay(reconnectDelay(attempt), closing.signal)
        ) {
          return;
        }
        if (closing.signal.aborted) return;
        try {
          await pool.query("SELECT 1");
        } catch {
          continue;
        }
        for (const source of [...lostSources]) {
          lostSources.delete(source);
          watch.up(source);
        }
      }
    } finally {
      probing = false;
    }
  }

  let prepared: Promise<void> | undefined;
  async function prepare(): Promise<void> {
    const client = await pool.connect();
    let failed = true;
    try {
      await migrate(client);
      await assertSearchPath(client, typeof target === "string");
      failed = false;
    } finally {
      // A client whose connection failed is not handed out again.
      client.release(failed);
    }
  }

  return {
    name: "PostgreSQL",
    addsEach: false,
    connection: pool,
    factory: postgresBackend as BackendFactory<IQueueBackend, unknown>,
    // BullMQ's worker waits this long before it asks again for a job when
    // PostgreSQL refused a connection (ioredis, instead, waits for Redis
    // itself): the default, 15 s, would leave it idle that long after
    // PostgreSQL is back.
    workerOptions: { runRetryDelay: 1_000 },
    prepare(): Promise<void> {
      prepared ??= prepare();
      const attempt = prepared;
      attempt.catch(() => {
        if (prepared === attempt) prepared = undefined;
      });
      return attempt;
    },
    watch() {
      // PostgreSQL's connections are watched through their errors (see
      // lost()): a pool makes one per query when it has none idle.
    },
    lost(source, error) {
      watch.down(source, error);
      lostSources.add(source);
      void probeUntilReached();
    },
    unreachable(error) {
      this.lost(unreachable, error);
    },
    forget(_queue, chains) {
      // BullMQ's own delete_deduplication_key command, for many ids at
      // once: one statement per group, not one per chain. PostgreSQL does
      // not expire a row as Redis expires a key, so close() waits for them.
      const forgetting = pool.query(
        "DELETE FROM dedup WHERE queue = $1 AND dedup_id = ANY($2::text[])",
        [queueName, chains],
      ).then(() => {}, () => {});
      forgets.add(forgetting);
      void forgetting.then(() => forgets.delete(forgetting));
    },
    async announce(queue, names, _shards, now) {
      if (names.length === 0) return;
      await queue.backend.setQueueMeta(
        Object.fromEntries(names.map((name) => [TASK_FIELD + name, now])),
      );
    },
    shards: () => Promise.resolve(undefined),
    async names(queue) {
      const meta = await queue.backend.getQueueMeta();
      return Object.entries(meta).flatMap(([field, at]) =>
        field.startsWith(TASK_FIELD)
          ? [[field.slice(TASK_FIELD.length), Number(at)] as [string, number]]
          : []
      );
    },
    async probe(worker) {
      await worker.backend.setQueueMeta({
        "background-tasks:probe": Date.now(),
      });
    },
    async close(): Promise<void> {
      closing.abort();
      await Promise.all(forgets);
      await closePool();
    },
  };
}

/**
 * Brings BullMQ's schema to the version this BullMQ needs, if it is not
 * there yet: whichever process starts first on an empty database makes it,
 * and the others find it (BullMQ's migrations take a lock, so that two at
 * once run them once). A schema already made, by an earlier start or by a
 * separate step, is only read, so that a user without the right to create
 * tables can run the web processes and workers.
 */
async function migrate(client: PgPoolClient): Promise<void> {
  let version = 0;
  try {
    version = await assertSchemaCompatibility(client, DEFAULT_SCHEMA);
  } catch (error) {
    if (!(error instanceof SchemaMigrationRequiredError)) throw error;
  }
  if (version < LATEST_SCHEMA_VERSION) {
    await runMigrations(client, DEFAULT_SCHEMA);
  }
}

/**
 * Throws unless BullMQ's schema comes first in the connection's search
 * path, as BullMQ's queries need: a pool of this package's is made so, a
 * caller's pool must be.
 */
async function assertSearchPath(
  client: PgPoolClient,
  ours: boolean,
): Promise<void> {
  const { rows } = await client.query<{ first: string | null }>(
    "SELECT (current_schemas(false))[1] AS first",
  );
  if (rows[0]?.first === DEFAULT_SCHEMA) return;
  throw new Error(
    ours
      ? `BullMQ's schema "${DEFAULT_SCHEMA}" is not first in the search path that the URL's options set: remove 'search_path' from them`
      : `The pg.Pool in 'connection' must have BullMQ's schema "${DEFAULT_SCHEMA}" first in its search path, as BullMQ's queries name its tables without it: make it with options: "-c search_path=${DEFAULT_SCHEMA}"`,
  );
}

/**
 * BullMQ's PostgreSQL backend, with two changes, for what this package
 * promises:
 *
 * - BullMQ keeps the first failure of a backend's readiness (its
 *   `waitUntilReady()`, and its connection's), so that a queue or worker
 *   made while PostgreSQL could not be reached would fail every query ever
 *   after, though PostgreSQL came back (bullmq 6.7.6). A failure is
 *   forgotten here: the next query tries again.
 * - BullMQ's `FlowProducer.addBulk()` ignores the errors that the backend's
 *   `addFlow()` returns per flow, and PostgreSQL's returns its statement's
 *   failure so (a lost connection included): flows not stored would look
 *   stored. Here `addFlow()` throws it, as Redis's does.
 */
function postgresBackend(
  ...[name, options, factoryOptions]: Parameters<
    BackendFactory<PostgresQueueBackend, PostgresConnectionOptions>
  >
): PostgresQueueBackend {
  const backend = createPostgresBackend(name, options, factoryOptions);
  forgetFailedReadiness(backend.connection);
  forgetFailedReadiness(backend);
  const addFlow = backend.addFlow.bind(backend);
  backend.addFlow = async (entries) => {
    const results = await addFlow(entries);
    const failed = results.find(([error]) => error !== null);
    if (failed !== undefined) throw failed[0];
    return results;
  };
  return backend;
}

/** See postgresBackend(): `readyPromise` is where BullMQ keeps it. */
function forgetFailedReadiness(
  target: { waitUntilReady(): Promise<void> },
): void {
  const waitUntilReady = target.waitUntilReady.bind(target);
  target.waitUntilReady = () => {
    const ready = waitUntilReady();
    ready.catch(() => {
      (target as { readyPromise?: unknown }).readyPromise = undefined;
    });
    return ready;
  };
}

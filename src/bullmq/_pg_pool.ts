// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The pool BullMQ is given on PostgreSQL: one of this package's, made of a
// postgres:// URL once node-postgres is loaded, or the caller's, which is
// left as it was found. Either way BullMQ gets a stand-in that keeps the
// 'error' listeners BullMQ adds, so that close() can take them away.

import { DEFAULT_SCHEMA, type PgModule, type PgPool } from "npm:bullmq@^6";

/**
 * node-postgres, loaded when a PostgreSQL connection is first given, so that
 * a Redis user never loads it. The specifier is built, not written out: a
 * literal `import("npm:pg@^8")` puts pg in Deno's graph as an optional peer
 * of bullmq, and on Deno 2.9.6 a program's first run without a lockfile then
 * fails to resolve `npm:bullmq` at all (`Cannot find module …/bullmq/6.7.6_1/
 * index.js`), Redis users' included. Built this way, pg is resolved when
 * imported; BullMQ, which would `require()` it, is given the pool instead.
 */
const PG = ["npm:pg", "8"].join("@^");

let pgModule: Promise<PgModule> | undefined;

function loadPg(): Promise<PgModule> {
  pgModule ??= import(PG).then((module) => module.default as PgModule);
  // A failed load (no network on a first run) is tried again next time.
  pgModule.catch(() => pgModule = undefined);
  return pgModule;
}

/** The pool that BullMQ and this package use, and how to let go of it. */
export interface Pool {
  /** What BullMQ's classes are given: BullMQ takes it for the caller's. */
  readonly pool: PgPool;
  /**
   * Ends a pool of this package's; takes BullMQ's listeners off the
   * caller's, leaving it open. Once, however many ask: node-postgres
   * throws on a second end().
   */
  close(): Promise<void>;
}

/**
 * The pool for `target`: for a URL, a pool of this package's, made at its
 * first use (so that BullMQ's classes can be made at once, and BullMQ
 * never loads node-postgres itself: see PG), ended by close(); for a
 * caller's pool, that pool, on which BullMQ adds an 'error' listener per
 * queue, flow producer and worker and never removes it (bullmq 6.7.6: Node's
 * MaxListeners warning came with the fourth backend and worker made and
 * closed on one pool). Here they listen to one listener of this package's,
 * which close() removes.
 */
export function openPool(target: string | PgPool): Pool {
  const errorListeners = new Set<(error: Error) => void>();
  // An idle connection that dies (PostgreSQL restarted) is told through the
  // queues' 'error' events; without a listener, the pool's own would end
  // the process.
  const forward = (error: Error): void => {
    for (const listener of errorListeners) listener(error);
  };
  let made: Promise<PgPool> | undefined;
  let closed: Promise<void> | undefined;
  const real = (): Promise<PgPool> => {
    if (closed !== undefined) {
      return Promise.reject(new Error("The pool has ended"));
    }
    if (typeof target !== "string") return Promise.resolve(target);
    made ??= loadPg().then((pg) => {
      const pool = new pg.Pool({
        ...withSearchPath(target),
        // BullMQ's LISTEN connection must notice one that silently died.
        keepAlive: true,
        // As ioredis's connectTimeout: a host that drops packets is down
        // after 10 s, not the system's minutes.
        connectionTimeoutMillis: 10_000,
      });
      pool.on("error", forward);
      return pool;
    });
    made.catch(() => made = undefined);
    return made;
  };
  if (typeof target !== "string") target.on("error", forward);
  const close = (): Promise<void> =>
    closed ??= typeof target === "string"
      ? (async () => {
        await (await made?.catch(() => undefined))?.end();
      })()
      : Promise.resolve().then(() => {
        (target as PgPool & { off(event: "error", listener: unknown): void })
          .off("error", forward);
      });
  const pool = {
    // What BullMQ reads of a pool's options: its LISTEN connection's.
    options: typeof target === "string"
      ? { keepAlive: true }
      : (target as { options?: unknown }).options,
    connect: async () => (await real()).connect(),
    query: async (text: string, params?: readonly unknown[]) =>
      (await real()).query(text, params),
    // BullMQ never ends a pool it is given; close() does.
    end: close,
    on(event: string, listener: (error: Error) => void) {
      if (event === "error") errorListeners.add(listener);
      return pool;
    },
    removeAllListeners() {
      errorListeners.clear();
      return pool;
    },
  };
  return { pool: pool as unknown as PgPool, close };
}

/**
 * node-postgres's `connectionString` and `options` for `url`, with BullMQ's
 * schema first in the search path, as BullMQ's queries name its tables
 * without it. node-postgres takes the URL's own `options` parameter over
 * the pool's, so that one is moved into the pool's, before the search path
 * (as BullMQ does with the options it is given): a later setting wins.
 */
function withSearchPath(
  url: string,
): { connectionString: string; options: string } {
  const parsed = new URL(url);
  const own = parsed.searchParams.get("options");
  parsed.searchParams.delete("options");
  const options = `${own ?? ""} -c search_path=${DEFAULT_SCHEMA}`.trim();
  return { connectionString: own === null ? url : parsed.href, options };
}

// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Whether a Deno KV can queue messages, which the whole backend rests on.
// A remote database reached through KV Connect, Deno Deploy's included,
// cannot: Deno's client refuses any operation that enqueues, before sending
// it ("Enqueue operations are not supported in KV Connect": denoland/denokv,
// remote/lib.rs, `atomic_write`), and its listenQueue() never settles, not
// even once the database is closed (`dequeue_next_message`), so a listener
// would keep the process alive for nothing. A Deno.Kv does not say which
// kind it is: a store learns it from its first commit, and a backend that
// is to listen asks first (queueRefusal()).

/** What follows "this Deno KV cannot queue messages" in both messages. */
function why(api: string): string {
  return `KV Connect and Deno Deploy do not support ${api}, so the KV backend needs a database file on this host (Deno.openKv(path)); on Deno Deploy, use the BullMQ backend on PostgreSQL or Redis (bullmqBackend() from @afterward/background-tasks/bullmq)`;
}

/** Whether `error` is Deno's refusal to enqueue on KV Connect. */
export function refusesQueue(error: unknown): boolean {
  return error instanceof Error &&
    /\benqueue\b.*\bnot supported\b/i.test(error.message);
}

/** The error a store fails with on a database that cannot queue. */
export function cannotStore(cause: unknown): Error {
  return new Error(
    `Cannot store the request's tasks as this Deno KV cannot queue messages: ${
      why("enqueue()")
    }`,
    { cause },
  );
}

/** The line a backend that was to listen writes instead, on such a database. */
export const CANNOT_LISTEN =
  `The KV backend cannot run tasks as this Deno KV cannot queue messages: ${
    why("listenQueue()")
  }`;

/**
 * Deno's refusal to enqueue on `kv`, or `undefined` when it can queue (or
 * the question could not be asked: the database closed, or was locked by
 * another process). Asked with an operation that enqueues behind a check
 * that cannot hold (a versionstamp on a key never written): a database
 * that can queue answers that the check failed, and stores nothing.
 */
export async function queueRefusal(
  kv: Deno.Kv,
  neverWritten: Deno.KvKey,
): Promise<Error | undefined> {
  try {
    await kv.atomic()
      .check({ key: neverWritten, versionstamp: "00000000000000000000" })
      .enqueue(null)
      .commit();
  } catch (error) {
    if (refusesQueue(error)) return error as Error;
  }
  return undefined;
}

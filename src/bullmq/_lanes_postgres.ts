// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Lanes on PostgreSQL (see _lanes.ts): a lane is rows of a table beside
// BullMQ's, `background_tasks_lane`, ordered by a sequence. Every step is a
// transaction that first takes the lane's advisory lock, so that the steps
// of one lane happen one at a time, in the order they took it: a store adds
// its jobs through BullMQ's own `add_flow()` (which keeps BullMQ's
// deduplication) and records them in their lanes in the same transaction.

import type { JobJson, PgPool, PgPoolClient } from "npm:bullmq@^6";
import type { JobData } from "./_shared.ts";
import type { Jobs } from "./_shard.ts";
import {
  isItself,
  type KeyedJob,
  LaneJob,
  type LaneOutcome,
  type Lanes,
  type Turn,
} from "./_lanes.ts";

/** Made when a keyed task is first stored or run, if it is not there yet. */
const TABLE = `CREATE TABLE IF NOT EXISTS background_tasks_lane (
  queue text NOT NULL,
  lane text NOT NULL,
  seq bigserial NOT NULL,
  job_id text NOT NULL,
  PRIMARY KEY (queue, lane, seq),
  UNIQUE (queue, job_id)
)`;

/** A lane's head: its job, and that job's state (null once removed). */
interface Head {
  seq: string;
  job_id: string;
  state: string | null;
  attempts_made: number | null;
  data: JobData | null;
}

const HEAD = `SELECT l.seq, l.job_id, j.state, j.attempts_made, j.data
  FROM background_tasks_lane l
  LEFT JOIN job j ON j.queue = l.queue AND j.id = l.job_id
  WHERE l.queue = $1 AND l.lane = $2 ORDER BY l.seq LIMIT 1`;

/** Lanes on PostgreSQL, for queue `queueName` on `pool`. */
export function postgresLanes(pool: PgPool, queueName: string): Lanes {
  let made: Promise<void> | undefined;
  const ready = (): Promise<void> => {
    made ??= makeTable(pool);
    made.catch(() => made = undefined);
    return made;
  };

  /** The lane's head, once its finished jobs are dropped; none if empty. */
  async function head(
    client: PgPoolClient,
    lane: string,
  ): Promise<Head | undefined> {
    while (true) {
      const { rows } = await client.query<Head>(HEAD, [queueName, lane]);
      const first = rows[0];
      if (first === undefined || live(first)) return first;
      await client.query(
        "DELETE FROM background_tasks_lane WHERE queue = $1 AND lane = $2 AND seq = $3",
        [queueName, lane, first.seq],
      );
    }
  }

  async function addOne(
    client: PgPoolClient,
    queue: Jobs,
    job: KeyedJob,
  ): Promise<LaneOutcome> {
    const id = job.opts.jobId;
    const { lane } = job.data;
    const waiting = job.mode === "replace"
      ? (await client.query<{ job_id: string; data: JobData }>(
        `SELECT d.job_id, j.data FROM dedup d
          JOIN job j ON j.queue = d.queue AND j.id = d.job_id
          WHERE d.queue = $1 AND d.dedup_id = $2
            AND (d.expire_at_ms IS NULL OR d.expire_at_ms > $3)`,
        [queueName, lane, Date.now()],
      )).rows[0]
      : undefined;
    const entry = entryOf(queueName, new LaneJob(queue, job).json(), id);
    const { rows } = await client.query<{ id: string }>(
      "SELECT id FROM add_flow($1::jsonb) AS t(id)",
      [JSON.stringify([entry])],
    );
    const added = rows[0]?.id;
    if (added === id) {
      // In the place of the waiting duplicate BullMQ removed, if any.
      const moved = waiting === undefined ? undefined : await client.query(
        `UPDATE background_tasks_lane SET job_id = $3
          WHERE queue = $1 AND job_id = $2
            AND NOT EXISTS (SELECT 1 FROM job WHERE queue = $1 AND id = $2)`,
        [queueName, waiting.job_id, id],
      );
      if (moved?.rowCount === 1) {
        return { skipped: false, replaced: waiting!.data };
      }
      await client.query(
        `INSERT INTO background_tasks_lane (queue, lane, job_id)
          VALUES ($1, $2, $3) ON CONFLICT (queue, job_id) DO NOTHING`,
        [queueName, lane, id],
      );
      return { skipped: false };
    }
    if (added === undefined || Number(added) < 0) {
      throw new Error(
        `BullMQ did not add job ${id} to PostgreSQL: it answered ${added}`,
      );
    }
    if (job.mode === "replace" && waiting?.job_id === added) {
      // Written by a try whose answer was lost: this task, not a duplicate.
      if (isItself(waiting.data, job)) return { skipped: false };
      // The waiting job runs with this one's data: its arguments win.
      await client.query(
        "UPDATE job SET data = $3::jsonb WHERE queue = $1 AND id = $2",
        [queueName, added, JSON.stringify(job.data)],
      );
      return { skipped: false, replaced: waiting.data };
    }
    return { skipped: true };
  }

  return {
    async add(queue, group) {
      await ready();
      await transaction(pool, async (client) => {
        await lock(client, queueName, group.map((job) => job.data.lane));
        const ids = group.map((job) => job.opts.jobId);
        const { rows } = await client.query<{ id: string }>(
          "SELECT id FROM job WHERE queue = $1 AND id = ANY($2::text[])",
          [queueName, ids],
        );
        // Stored by a try whose answer was lost: left as they are.
        const stored = new Set(rows.map((row) => row.id));
        for (const job of group) {
          job.outcome = stored.has(job.opts.jobId)
            ? { skipped: false }
            : await addOne(client, queue, job);
        }
      });
    },

    async enter(_owner, lane, id, now): Promise<Turn> {
      await ready();
      return await transaction(pool, async (client) => {
        await lock(client, queueName, [lane]);
        await client.query(
          `INSERT INTO background_tasks_lane (queue, lane, job_id)
            VALUES ($1, $2, $3) ON CONFLICT (queue, job_id) DO NOTHING`,
          [queueName, lane, id],
        );
        const first = (await head(client, lane))!;
        if (first.job_id !== id) return { wait: true };
        const data = first.data!;
        if (data.due !== undefined && data.due > now) return { due: data.due };
        // Started: a duplicate added from now on waits behind it.
        await client.query(
          "DELETE FROM dedup WHERE queue = $1 AND dedup_id = $2 AND job_id = $3",
          [queueName, lane, id],
        );
        return { run: data };
      });
    },

    async leave(_owner, lane, now) {
      await ready();
      await transaction(pool, async (client) => {
        await lock(client, queueName, [lane]);
        const first = await head(client, lane);
        // A head that never began an attempt, and waits for its turn.
        if (first?.state !== "delayed" || first.attempts_made !== 0) return;
        const due = first.data?.due ?? 0;
        await client.query(
          due > now
            ? "SELECT change_delay($1, $2, $3, $4)"
            : "SELECT promote($1, $2)",
          due > now
            ? [queueName, first.job_id, due - now, now]
            : [queueName, first.job_id],
        );
      });
    },
  };
}

/** Whether a head's job is stored and not finished. */
function live(head: Head): boolean {
  return head.state !== null && head.state !== "completed" &&
    head.state !== "failed";
}

/**
 * Takes the advisory locks of `lanes`, in one order (that of their keys),
 * so that two transactions that share lanes cannot wait for each other.
 * Two-part keys, whose first part is this package's: none is one of
 * BullMQ's (its one-part keys are another space; its two-part ones start
 * with the hash of another name).
 */
async function lock(
  client: PgPoolClient,
  queueName: string,
  lanes: readonly string[],
): Promise<void> {
  await client.query(
    `SELECT pg_advisory_xact_lock(hashtext('background-tasks:lane'), k) FROM (
      SELECT DISTINCT hashtext($1 || ':' || lane) AS k
        FROM unnest($2::text[]) AS lane ORDER BY k
    ) AS keys`,
    [queueName, lanes],
  );
}

/** Runs `work` in a transaction on a client of `pool`. */
async function transaction<T>(
  pool: PgPool,
  work: (client: PgPoolClient) => Promise<T>,
): Promise<T> {
  const client = await pool.connect();
  let broken = true;
  try {
    await client.query("BEGIN");
    const result = await work(client);
    await client.query("COMMIT");
    broken = false;
    return result;
  } catch (error) {
    // A connection that can still roll back is handed out again.
    await client.query("ROLLBACK").then(() => broken = false, () => {});
    throw error;
  } finally {
    client.release(broken);
  }
}

/** Makes the lanes' table, once, whichever process comes first. */
async function makeTable(pool: PgPool): Promise<void> {
  const { rows } = await pool.query<{ made: boolean }>(
    "SELECT to_regclass('background_tasks_lane') IS NOT NULL AS made",
  );
  if (rows[0]?.made) return;
  await transaction(pool, async (client) => {
    await client.query(
      "SELECT pg_advisory_xact_lock(hashtext('background-tasks:lane'), 0)",
    );
    await client.query(TABLE);
  });
}

/**
 * A job as BullMQ's `add_flow()` takes it: what its PostgreSQL backend
 * makes of a job for a flow (the function's documented input), without a
 * parent.
 */
function entryOf(queue: string, json: JobJson, id: string): object {
  const opts = json.opts as {
    delay?: number;
    attempts?: number;
    priority?: number;
    lifo?: boolean;
  };
  return {
    queue,
    id,
    name: json.name,
    data: json.data,
    opts,
    priority: opts.priority ?? 0,
    delay: opts.delay ?? 0,
    timestamp: json.timestamp,
    attempts: opts.attempts ?? 1,
    parentQueue: null,
    parentId: null,
    parentKey: null,
    dedupId: json.deduplicationId ?? null,
    schedulerId: null,
    lifo: opts.lifo ?? false,
    addToWaitingChildren: false,
  };
}

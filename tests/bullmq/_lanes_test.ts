// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Lanes on Redis and on PostgreSQL, below the backend: what a store of keyed jobs says it did,
// when it is sent again after a lost answer.

import assert from "node:assert/strict";
import {
  type BackendFactory,
  createRedisBackend,
  type IQueueBackend,
  type PgPool,
} from "npm:bullmq@^6";
import { Jobs } from "../../src/bullmq/_shard.ts";
import { type KeyedJob, laneOf, type Lanes } from "../../src/bullmq/_lanes.ts";
import { redisLanes } from "../../src/bullmq/_lanes_redis.ts";
import { postgresLanes } from "../../src/bullmq/_lanes_postgres.ts";
import { openPostgres } from "../../src/bullmq/_postgres.ts";
import { ConnectionWatch } from "../../src/bullmq/_connection_watch.ts";
import { redisTest, startRedis } from "../_helpers/redis.ts";
import { postgresTest, startPostgres } from "../_helpers/postgres.ts";

/** A "replace" task's job, without a delay, as the backend makes it. */
function replacing(chain: string, args: unknown[]): KeyedJob {
  const lane = laneOf("reindex", "u42");
  return {
    name: "reindex",
    data: { chain, index: 0, args, lane },
    mode: "replace",
    opts: {
      jobId: `${chain}.0`,
      deduplication: { id: lane, replace: true },
    },
  };
}

Deno.test({
  ...redisTest,
  name:
    "on Redis, a replacement sent again after a lost answer, having written its data into the waiting job, replaced nothing the second time",
}, async () => {
  await using redis = await startRedis();
  const queue = new Jobs(
    `lanes-${crypto.randomUUID()}`,
    { connection: { host: "127.0.0.1", port: redis.port } },
    createRedisBackend as BackendFactory<IQueueBackend, unknown>,
  );
  try {
    await sentAgain(queue, redisLanes());
  } finally {
    await queue.obliterate({ force: true });
    await queue.close();
  }
});

Deno.test({
  ...postgresTest,
  name:
    "on PostgreSQL, a replacement sent again after a lost answer, having written its data into the waiting job, replaced nothing the second time",
}, async () => {
  await using server = await startPostgres();
  const name = `lanes-${crypto.randomUUID()}`;
  const datastore = openPostgres(
    server.url,
    name,
    new ConnectionWatch(() => {}),
  );
  await datastore.prepare();
  const queue = new Jobs(
    name,
    { connection: datastore.connection },
    datastore.factory,
  );
  try {
    await sentAgain(queue, postgresLanes(datastore.connection as PgPool, name));
  } finally {
    await queue.close();
    await datastore.close();
  }
});

async function sentAgain(queue: Jobs, lanes: Lanes): Promise<void> {
  const waiting = replacing("first", ["old"]);
  await lanes.add(queue, [waiting]);
  assert.deepEqual(waiting.outcome, { skipped: false });
  // The waiting job is in BullMQ's wait list, which its replace mode does
  // not touch: the replacement's data is written into it.
  const replacement = replacing("second", ["new"]);
  await lanes.add(queue, [replacement]);
  assert.equal(replacement.outcome?.replaced?.chain, "first");
  // The same store again, as the group commit sends it when the answer was
  // lost: the waiting job holds its data already.
  const again = replacing("second", ["new"]);
  await lanes.add(queue, [again]);
  assert.deepEqual(again.outcome, { skipped: false });
  const job = await queue.getJob("first.0");
  assert.deepEqual((job?.data as { args: unknown[] }).args, ["new"]);
}

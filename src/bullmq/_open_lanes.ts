// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The lanes of a datastore (see _lanes.ts): Redis's or PostgreSQL's.

import type { PgPool } from "npm:bullmq@^6";
import type { Datastore } from "./_shared.ts";
import type { Lanes } from "./_lanes.ts";
import { redisLanes } from "./_lanes_redis.ts";
import { postgresLanes } from "./_lanes_postgres.ts";

/** The lanes of `datastore`, for queue `queueName`. */
export function openLanes(datastore: Datastore, queueName: string): Lanes {
  return datastore.name === "Redis"
    ? redisLanes()
    : postgresLanes(datastore.connection as PgPool, queueName);
}

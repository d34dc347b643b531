// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Lanes on Redis (see _lanes.ts): a lane is a sorted set of job ids, scored
// by a counter, beside BullMQ's keys under the shard's hash tag, so that
// one script or transaction can read both on a Redis Cluster. A job is added
// in a MULTI of its own making: BullMQ's add script, with its
// deduplication, between two scripts of ours, the first reading the
// duplicate that waits (to say what a replacement took the place of), the
// second recording in the lane what BullMQ did.

import type {
  IQueueBackend,
  RedisClient,
  RedisQueueBackend,
} from "npm:bullmq@^6";
import type { JobData } from "./_shared.ts";
import {
  isItself,
  type KeyedJob,
  LaneJob,
  type LaneOutcome,
  type Lanes,
} from "./_lanes.ts";

/** Whether `job` (an id) is stored and not finished: completed or failed. */
const LIVE = `
local function live(prefix, job)
  return redis.call('EXISTS', prefix .. job) == 1
    and not redis.call('ZSCORE', prefix .. 'completed', job)
    and not redis.call('ZSCORE', prefix .. 'failed', job)
end
`;

/**
 * Before BullMQ's add, for "replace": the duplicate that waits (the job its
 * deduplication key names), with its data. KEYS: the deduplication key;
 * ARGV: the jobs' key prefix.
 */
const BEFORE = `
local waiting = redis.call('GET', KEYS[1])
if not waiting then return false end
local data = redis.call('HGET', ARGV[1] .. waiting, 'data')
if not data then return false end
return data
`;

/**
 * After BullMQ's add: records what it did. Stored: the job joins its lane
 * (last, or in the place of the waiting duplicate BullMQ removed); stored
 * before (a store sent again): nothing. Not stored, a duplicate waiting:
 * "replace" gives the waiting job this job's data (its arguments win);
 * "skip" leaves it. KEYS: the lane, the deduplication key, the counter;
 * ARGV: the jobs' key prefix, the job's id, its mode, its data.
 */
const AFTER = `
local lane, dedup, counter = KEYS[1], KEYS[2], KEYS[3]
local prefix, id, mode = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', prefix .. id) == 1 then
  if redis.call('ZSCORE', lane, id) then return 'stored' end
  if mode == 'replace' then
    local last = redis.call('ZRANGE', lane, -1, -1, 'WITHSCORES')
    if last[1] and redis.call('EXISTS', prefix .. last[1]) == 0 then
      redis.call('ZREM', lane, last[1])
      redis.call('ZADD', lane, last[2], id)
      return 'replaced'
    end
  end
  redis.call('ZADD', lane, redis.call('INCR', counter), id)
  return 'stored'
end
if mode == 'replace' then
  local waiting = redis.call('GET', dedup)
  if waiting and redis.call('EXISTS', prefix .. waiting) == 1 then
    redis.call('HSET', prefix .. waiting, 'data', ARGV[4])
    return 'overwritten'
  end
end
return 'skipped'
`;

/**
 * A worker's job takes its turn (see Lanes.enter()). KEYS: the lane, the
 * deduplication key, the counter; ARGV: the jobs' key prefix, the job's id,
 * now. Returns {1, data} to run, {2, due} to wait for its delay, {0} to
 * wait for its turn.
 */
const ENTER = `${LIVE}
local lane, dedup, counter = KEYS[1], KEYS[2], KEYS[3]
local prefix, id, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
if not redis.call('ZSCORE', lane, id) then
  redis.call('ZADD', lane, redis.call('INCR', counter), id)
end
while true do
  local head = redis.call('ZRANGE', lane, 0, 0)[1]
  if head == id then break end
  if live(prefix, head) then return {0} end
  redis.call('ZREM', lane, head)
end
local data = redis.call('HGET', prefix .. id, 'data')
if not data then return {0} end
local due = tonumber(cjson.decode(data)['due'])
if due and due > now then return {2, tostring(due)} end
if redis.call('GET', dedup) == id then redis.call('DEL', dedup) end
return {1, data}
`;

/**
 * Drops the finished jobs at the head of a lane; returns the new head and
 * when it is due, if it never began an attempt and waits in the delayed
 * set. KEYS: the lane; ARGV: the jobs' key prefix.
 */
const LEAVE = `${LIVE}
local lane, prefix = KEYS[1], ARGV[1]
while true do
  local head = redis.call('ZRANGE', lane, 0, 0)[1]
  if not head then return false end
  if live(prefix, head) then
    local attempts = tonumber(redis.call('HGET', prefix .. head, 'atm')) or 0
    if attempts > 0 or not redis.call('ZSCORE', prefix .. 'delayed', head) then
      return false
    end
    local due = cjson.decode(redis.call('HGET', prefix .. head, 'data'))['due']
    return {head, tostring(due or 0)}
  end
  redis.call('ZREM', lane, head)
end
`;

/** The scripts, under names of their own (BullMQ's are `name:version`). */
const SCRIPTS = {
  "afterward-lane-before:1": { numberOfKeys: 1, lua: BEFORE },
  "afterward-lane-after:1": { numberOfKeys: 3, lua: AFTER },
  "afterward-lane-enter:1": { numberOfKeys: 3, lua: ENTER },
  "afterward-lane-leave:1": { numberOfKeys: 1, lua: LEAVE },
};

/** Clients that know the scripts. */
const defined = new WeakSet<RedisClient>();

/** The client of `owner`, which knows the scripts. */
async function clientOf(owner: { backend: IQueueBackend }): Promise<{
  client: RedisClient;
  backend: RedisQueueBackend;
}> {
  const backend = owner.backend as RedisQueueBackend;
  const client = await backend.client;
  if (!defined.has(client)) {
    for (const [name, script] of Object.entries(SCRIPTS)) {
      client.defineCommand(name, script);
    }
    defined.add(client);
  }
  return { client, backend };
}

/** The keys of `lane` in the queue of `backend`. */
function keysOf(backend: IQueueBackend, lane: string): string[] {
  return [
    backend.toKey(`lane:${lane}`),
    backend.toKey(`de:${lane}`),
    backend.toKey("lane-counter"),
  ];
}

/** Lanes on Redis. */
export function redisLanes(): Lanes {
  return {
    async add(queue, group) {
      const { client, backend } = await clientOf(queue);
      const prefix = backend.toKey("");
      const multi = client.multi();
      const replies: { before?: number; after: number }[] = [];
      let count = 0;
      for (const job of group) {
        const keys = keysOf(backend, job.data.lane);
        const before = job.mode === "replace" ? count++ : undefined;
        if (before !== undefined) {
          multi.runCommand("afterward-lane-before:1", [keys[1], prefix]);
        }
        // Queued at once; its reply comes with the others, from exec().
        new LaneJob(queue, job).addJob(multi).catch(() => {});
        count++;
        multi.runCommand("afterward-lane-after:1", [
          ...keys,
          prefix,
          job.opts.jobId,
          job.mode,
          JSON.stringify(job.data),
        ]);
        replies.push({
          ...(before === undefined ? {} : { before }),
          after: count++,
        });
      }
      const results = await multi.exec();
      if (results === null) throw new Error("Redis discarded the transaction");
      for (const [error] of results) if (error) throw error;
      group.forEach((job, index) => {
        const { before, after } = replies[index]!;
        const waiting = before === undefined
          ? undefined
          : results[before]![1] as string | null;
        job.outcome = outcome(results[after]![1] as string, waiting, job);
      });
    },

    async enter(owner, lane, id, now) {
      const { client, backend } = await clientOf(owner);
      const [turn, value] = await client.runCommand("afterward-lane-enter:1", [
        ...keysOf(backend, lane),
        backend.toKey(""),
        id,
        now,
      ]) as [number, string?];
      if (turn === 1) return { run: JSON.parse(value!) as JobData };
      return turn === 2 ? { due: Number(value) } : { wait: true };
    },

    async leave(owner, lane, now) {
      const { client, backend } = await clientOf(owner);
      const head = await client.runCommand("afterward-lane-leave:1", [
        keysOf(backend, lane)[0],
        backend.toKey(""),
      ]) as [string, string] | null;
      if (!head) return;
      const [id, due] = head;
      // Gone meanwhile (replaced, started): nothing to wake.
      await (Number(due) > now
        ? backend.changeDelay(id, Number(due) - now)
        : backend.promote(id)).catch(() => {});
    },
  };
}

/** What the scripts' replies say of a job. */
function outcome(
  after: string,
  waiting: string | null | undefined,
  job: KeyedJob,
): LaneOutcome {
  const replaced = waiting ? JSON.parse(waiting) as JobData : undefined;
  switch (after) {
    case "skipped":
      return { skipped: true };
    case "replaced":
    case "overwritten":
      return replaced !== undefined && isItself(replaced, job)
        ? { skipped: false }
        : { skipped: false, replaced };
    default:
      return { skipped: false };
  }
}

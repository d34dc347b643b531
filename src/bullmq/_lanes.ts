// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Keyed tasks on BullMQ: a keyed task is a job of its own, stored apart from
// its request's chain, in its key's lane: the jobs of one task name and one
// key, in the order they were stored. What each datastore keeps of a lane
// (a sorted set beside BullMQ's keys on Redis, rows of a table beside
// BullMQ's on PostgreSQL) is behind `Lanes`, in _lanes_redis.ts and
// _lanes_postgres.ts (_open_lanes.ts picks one); the web side's store is in
// _keyed.ts, the worker's turn in _lane_gate.ts.
//
// How the modes hold: a job is stored with BullMQ's deduplication by its
// lane ("skip": simple mode; "replace": its replace mode, which takes the
// place of a delayed duplicate and starts its delay again), and recorded in
// its lane in the same transaction. The deduplication key stays while the
// job waits, and is deleted when its attempt begins, so that it means "a
// duplicate waits" exactly. A worker runs a job only at the head of its
// lane; the others go back to BullMQ's delayed set until the head is done.

import { Job, type JobJson, type JobsOptions } from "npm:bullmq@^6";
import type { OnDuplicate } from "../api/define_task.ts";
import type { JobData, Owner } from "./_shared.ts";
import type { Jobs } from "./_shard.ts";

/**
 * A keyed task's job, as the backend stores it (a flow's job of one, as the
 * group commits of _shard.ts take it), and what became of it.
 */
export interface KeyedJob {
  readonly name: string;
  readonly data: JobData & { readonly lane: string };
  readonly opts: JobsOptions & { readonly jobId: string };
  /** Its task's `onDuplicate`. */
  readonly mode: OnDuplicate;
  /** What its store did with it: set once stored. */
  outcome?: LaneOutcome;
}

/** What storing a keyed job did. */
export interface LaneOutcome {
  /** Not stored: a duplicate waits (`"skip"`). */
  readonly skipped: boolean;
  /**
   * The data of the waiting duplicate whose place it took (`"replace"`),
   * which will not run.
   */
  readonly replaced?: JobData | undefined;
}

/** Where a worker's job stands in its lane. */
export type Turn =
  /** At the head: it starts, with the data it carries now. */
  | { readonly run: JobData }
  /** At the head, with a delay that has not passed: not before `due`. */
  | { readonly due: number }
  /** Behind a duplicate that has not finished. */
  | { readonly wait: true };

/** What a datastore keeps of lanes. */
export interface Lanes {
  /**
   * Stores `group` in `queue` and records each job in its lane, in one
   * transaction, in order; sets each job's `outcome`. A job already
   * stored (a store sent again) is left as it is.
   */
  add(queue: Jobs, group: readonly KeyedJob[]): Promise<void>;
  /**
   * Takes the turn of job `id` of `lane`, which `owner` (a worker) fetched:
   * run it if it heads the lane (once finished jobs ahead of it are
   * dropped), and then it no longer waits (its deduplication key is
   * deleted). A job that its lane does not hold (retried once failed)
   * joins its end.
   */
  enter(owner: Owner, lane: string, id: string, now: number): Promise<Turn>;
  /**
   * Drops the finished jobs at the head of `lane`, and wakes the new head if
   * it waits in BullMQ's delayed set for its turn.
   */
  leave(owner: Owner, lane: string, now: number): Promise<void>;
}

/**
 * Whether the waiting duplicate whose data a store read was this very task:
 * a store sent again after a lost answer, which had written the task's data
 * into that job (see `LaneOutcome.replaced`). It replaced nothing then.
 */
export function isItself(waiting: JobData, job: KeyedJob): boolean {
  return waiting.chain === job.data.chain && waiting.index === job.data.index;
}

/**
 * The lane of a task: its name and key, as one string (a BullMQ
 * deduplication id), which no other pair gives.
 */
export function laneOf(name: string, key: string): string {
  return JSON.stringify([name, key]);
}

/** A job of BullMQ's, built as `Queue.add()` builds it, for a transaction of ours. */
export class LaneJob extends Job {
  constructor(queue: Jobs, job: KeyedJob) {
    super(queue, job.name, job.data, job.opts, job.opts.jobId);
  }

  /** The job as BullMQ stores it, once its options are checked. */
  json(): JobJson {
    const json = this.asJSON();
    this.validateOptions(json);
    return json;
  }
}

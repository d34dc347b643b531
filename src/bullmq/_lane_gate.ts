// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The worker's side of keyed tasks (see _lanes.ts): a keyed job that a
// worker fetched runs only at the head of its lane, and once its delay has
// passed; otherwise it goes back to BullMQ's delayed set, with no attempt
// counted, until the head finishes and wakes it, or `park` milliseconds
// pass (a head whose worker died before waking it). The key is thus held by
// the job that runs, under BullMQ's lock on it: a worker killed while it
// runs a keyed task loses the job once the lock expires, when BullMQ's
// stalled-job check gives it to another worker, at the head still.

import { DelayedError, type Job } from "npm:bullmq@^6";
import type { Datastore, JobData, Owner } from "./_shared.ts";
import type { Lanes, Turn } from "./_lanes.ts";
import { openLanes } from "./_open_lanes.ts";
import { reconnectDelay } from "./_connection_watch.ts";
import { delay } from "../core/_retry.ts";

/** A worker, whose errors its own listener says. */
type Worker = Owner & { emit(event: "error", error: unknown): unknown };

/** Lets keyed jobs run one at a time per lane, in order. */
export class LaneGate {
  readonly #lanes: Lanes;
  readonly #park: number;
  readonly #closing: AbortSignal;
  /** The `leave()`s under way, which `idle()` waits for. */
  readonly #leaving = new Set<Promise<void>>();

  /**
   * @param park Milliseconds a job behind its lane's head waits before it
   * asks again, should nobody wake it: the workers' lock duration.
   * @param closing Aborted as the worker closes.
   */
  constructor(
    datastore: Datastore,
    queueName: string,
    park: number,
    closing: AbortSignal,
  ) {
    this.#lanes = openLanes(datastore, queueName);
    this.#park = park;
    this.#closing = closing;
  }

  /**
   * The data `job` runs with, once it is its turn (a replacement may have
   * given it new data while it waited). Otherwise throws BullMQ's
   * `DelayedError`, once the job is back in the delayed set.
   */
  async enter(owner: Worker, job: Job, token?: string): Promise<JobData> {
    const { lane } = job.data as JobData;
    let turn: Turn | undefined;
    // Until the datastore answers: the job is locked meanwhile, and a
    // failure here is no attempt of the task's.
    for (let attempt = 1; turn === undefined; attempt++) {
      try {
        turn = await this.#lanes.enter(owner, lane!, job.id!, Date.now());
      } catch (error) {
        // Said as the worker's other errors are: once per outage for a
        // lost connection, a line each time for anything else.
        owner.emit("error", error);
        // Closing: left to stall, and to run again elsewhere.
        if (!await delay(reconnectDelay(attempt), this.#closing)) {
          throw new DelayedError(String(error));
        }
      }
    }
    if ("run" in turn) return turn.run;
    const until = "due" in turn ? turn.due : Date.now() + this.#park;
    try {
      await job.moveToDelayed(until, token);
    } catch {
      // Lost the datastore: the job stalls, and runs again once it is back.
    }
    throw new DelayedError();
  }

  /**
   * A keyed job finished an attempt (or failed without one): the next of
   * its lane may start if it was its last.
   */
  left(owner: Worker, job: Job | undefined): void {
    const lane = (job?.data as JobData | undefined)?.lane;
    if (lane === undefined) return;
    // Lost: the next job asks again within `park` milliseconds.
    const leaving = this.#lanes.leave(owner, lane, Date.now()).catch((error) =>
      void owner.emit("error", error)
    );
    this.#leaving.add(leaving);
    void leaving.then(() => this.#leaving.delete(leaving));
  }

  /** Resolves once the `left()`s so far are done, before the datastore closes. */
  async idle(): Promise<void> {
    await Promise.all(this.#leaving);
  }
}

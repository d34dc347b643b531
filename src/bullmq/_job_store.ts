// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// How a chain of one task is stored on Redis: one job, added by BullMQ's
// script the moment the chain is handed over, whatever else is in flight.
// ioredis sends the command at once on the shard's connection, behind those
// in flight, as it does for an awaited `queue.add()` per request, the code
// this backend replaces. A group commit, one group in flight, held each
// request until the group before its own was answered, and a store of its
// own cost more than a job (see bench/README.md). What fails for nobody's
// fault is handed to the shard's group commit, which stores it again
// through the outage, and so is what is handed over during one.

import type { FlowJob } from "npm:bullmq@^6";
import type { GroupCommit } from "../durable/_group_commit.ts";
import type { ConnectionWatch } from "./_connection_watch.ts";
import type { Datastore, JobData, Owner } from "./_shared.ts";

/** Milliseconds a store may go unanswered before the datastore counts as down. */
export const STALL = 5_000;

/** What a store unanswered for STALL ms tells the connection's watch. */
export function stallError(datastore: Datastore): Error {
  return new Error(
    `${datastore.name} left a store unanswered for ${STALL / 1000} s`,
  );
}

/** What the job store needs of its shard's queue. */
export interface JobQueue extends Owner {
  add(name: string, data: unknown, opts: FlowJob["opts"]): Promise<unknown>;
}

/**
 * Stores chains of one task, each by a `queue.add()` of its own, sent at
 * once. The job carries its chain's deduplication id (see chainFlow() in
 * bullmq_backend.ts), so that an add sent again adds nothing; the key is
 * deleted once the add is answered, in one command per turn of the event
 * loop. An add that fails for what its chain holds (see `splits`) rejects;
 * any other failure hands the chain to `again`, the shard's group commit,
 * which retries it until it is stored or its signal aborts. A chain handed
 * in while `watch` says the datastore is down goes to `again` at once. A
 * chain whose signal aborts leaves at once, rejected with the reason,
 * though its add may still store it. An add left unanswered for STALL ms
 * tells `watch` that the datastore is down, until an add is answered, or,
 * answered with an error, until the group commit has stored or given up its
 * chain.
 */
export function jobStore(
  queue: JobQueue,
  datastore: Datastore,
  watch: ConnectionWatch,
  again: GroupCommit<FlowJob>,
  splits: (error: unknown) => boolean,
): GroupCommit<FlowJob> {
  /** Chains handed in and not settled yet. */
  let unsettled = 0;
  const idle: (() => void)[] = [];
  /** Adds sent and not answered yet, and when the last answer came. */
  let unanswered = 0;
  let answeredAt = 0;
  let stalled = false;
  let watchdog: ReturnType<typeof setTimeout> | undefined;
  /** The chains whose deduplication keys are to be deleted. */
  let answered: string[] = [];
  let forgetting: ReturnType<typeof setTimeout> | undefined;

  function forget(): void {
    clearTimeout(forgetting);
    forgetting = undefined;
    const chains = answered;
    answered = [];
    if (chains.length > 0) datastore.forget(queue, chains);
  }

  /** Looks again in `ms`; a store waits for nothing at exit: this only watches. */
  function watchIn(ms: number): void {
    watchdog = setTimeout(check, ms);
    Deno.unrefTimer(watchdog);
  }

  function check(): void {
    watchdog = undefined;
    if (unanswered === 0) return;
    const waited = performance.now() - answeredAt;
    if (waited >= STALL && !stalled) {
      stalled = true;
      watch.down(store, stallError(datastore));
    }
    watchIn(waited >= STALL ? STALL : STALL - waited);
  }

  function sent(): void {
    if (unanswered++ === 0) answeredAt = performance.now();
    if (watchdog === undefined) watchIn(STALL);
  }

  function heard(): void {
    unanswered--;
    answeredAt = performance.now();
  }

  /** The stall is over, unless another add has waited STALL ms since. */
  function recovered(): void {
    if (!stalled) return;
    if (unanswered > 0 && performance.now() - answeredAt >= STALL) return;
    stalled = false;
    watch.up(store);
  }

  function store(flow: FlowJob, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    // A closing queue would wait for a connection that never comes: the
    // group commit refuses the chain. While the datastore is down, an add
    // would wait in ioredis's queue, holding the command, and be sent once
    // Redis is back, though its chain was given up meanwhile: the group
    // commit holds one group in flight, and lets the others go unsent.
    if (queue.closing !== undefined || watch.status.state === "down") {
      return again(flow, signal);
    }
    const chain = (flow.data as JobData).chain;
    const stored = Promise.withResolvers<void>();
    let open = true;
    const leave = (): boolean => {
      if (!open) return false;
      open = false;
      signal?.removeEventListener("abort", onAbort);
      if (--unsettled === 0) {
        for (const resolve of idle.splice(0)) {
          resolve();
        }
      }
      return true;
    };
    const onAbort = () => {
      if (leave()) stored.reject(signal!.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    unsettled++;
    sent();
    queue.add(flow.name, flow.data, flow.opts).then(() => {
      heard();
      recovered();
      if (answered.push(chain) === 1) forgetting = setTimeout(forget, 0);
      if (leave()) stored.resolve();
    }, (error) => {
      heard();
      if (!leave()) return recovered();
      if (splits(error)) {
        recovered();
        return stored.reject(error);
      }
      // A refusal (BUSY, READONLY, OOM) or a lost connection says nothing
      // of whether Redis is back: the stall ends once the group commit,
      // which tells its own outage, has stored the chain or given it up.
      again(flow, signal).then(() => {
        recovered();
        stored.resolve();
      }, (error) => {
        recovered();
        stored.reject(error);
      });
    });
    return stored.promise;
  }
  store.idle = async (): Promise<void> => {
    while (unsettled > 0) {
      await new Promise<void>((resolve) => idle.push(resolve));
    }
    forget();
    if (unanswered === 0) {
      clearTimeout(watchdog);
      watchdog = undefined;
    }
    await again.idle();
  };
  return store;
}

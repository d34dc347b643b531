// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The KV backend's listener commits twice per step (its claim, then its
// outcome), and Deno KV runs every commit, and every delivery and
// acknowledgement of a message, one after another on one thread, each with a
// flush to disk: four flushes per step, where the queue itself costs two.
// Deno KV runs the handlers of the messages it delivers concurrently, so
// the claims and outcomes of the deliveries under way are committed together
// instead, as one atomic operation (claims of 25 steps in one commit took
// 97 µs each, against 855 µs for a claim alone, here), and the next tasks
// they queue share messages, as the first steps of chains stored together
// do (_store.ts). A commit waits until the writes stop coming for a moment,
// since Deno KV delivers the next messages only while its thread has
// nothing else to do, but no longer than a bound: a steady trickle of
// writes would otherwise hold each until the limit's worth had come.

import {
  commitRetrying,
  isLocked,
  queueSteps,
  type Step,
  type StepQueue,
} from "./_step.ts";

/** A delivery's write: what it adds to the operation it shares. */
export interface Write {
  /**
   * What it checks (its chain): two writes on one key never share an
   * operation, since both checks would pass, and both writes apply.
   */
  readonly key: string;
  /** Adds its check and its mutations to `operation`. */
  add(operation: Deno.AtomicOperation): Deno.AtomicOperation;
  /**
   * A step of its chain to queue at once (its next task), its progress
   * written with it: the steps of an operation share messages.
   */
  readonly queue?: Step;
}

/** Commits the writes of deliveries, those of several together. */
export interface WriteBatch {
  /** Commits `write` with those of other deliveries: its own result. */
  commit(write: Write): Promise<Deno.KvCommitResult | Deno.KvCommitError>;
  /**
   * Commits the writes waiting at once, and each write from now on without
   * waiting for others: at a close, nothing should wait.
   */
  close(): void;
}

/** When a batch commits. */
export interface WriteBatchOptions {
  /** The most writes in one operation: Deno KV allows 100 checks. */
  limit: number;
  /** Milliseconds without a new write after which the writes waiting commit. */
  idle: number;
  /**
   * The most milliseconds a write waits for others: the writes waiting
   * commit once the first of them has waited this long, quiet or not.
   */
  maxWait: number;
  /** The most bytes of steps in a message, as their bound tells. */
  bytes: number;
}

/** A write waiting for its commit. */
interface Waiting {
  readonly write: Write;
  resolve(result: Deno.KvCommitResult | Deno.KvCommitError): void;
  reject(error: unknown): void;
}

/**
 * A batch that commits a delivery's write along with the writes of others,
 * one operation at a time: the writes handed in commit once
 * `options.limit` wait, `options.idle` ms after the last came, or
 * `options.maxWait` ms after the first of them came, whichever is first. An
 * operation applies all of its writes or none: when a check fails, each
 * half is committed on its own, down to the write at fault, which alone
 * resolves with `{ ok: false }`, as its own commit would have. Deno KV's
 * limits on an operation (800 KiB of mutations: a write that queues a step
 * may weigh 64 KiB) split it too. Any other error (the database closed,
 * or locked by another program for longer than commitRetrying() waits)
 * rejects the writes of the operation.
 */
export function batchWrites(
  queue: StepQueue,
  options: WriteBatchOptions,
): WriteBatch {
  const { kv } = queue;
  const { limit, idle, maxWait, bytes } = options;
  let closed = false;
  let waiting: Waiting[] = [];
  let committing = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let lastWrite = 0;
  // Whether a write came since the timer was set: a timer that saw none come
  // waited long enough, whatever the clock says (stopped by a program's mock
  // timers, or set back).
  let arrived = false;
  // Armed when a write finds none waiting, or none but those a commit
  // took: once it fires, the writes waiting have waited their most, and
  // commit without more quiet (after the commit under way, if any).
  let holding: ReturnType<typeof setTimeout> | undefined;
  let overdue = false;

  function wait(delay: number): void {
    arrived = false;
    timer = setTimeout(commitWaiting, delay);
  }

  /** Bounds how long the writes waiting now wait (see `holding`). */
  function hold(): void {
    holding ??= setTimeout(() => {
      holding = undefined;
      overdue = true;
      if (!committing) commitNow();
    }, maxWait);
  }

  /** All the writes waiting are taken for a commit: their bound goes. */
  function release(): void {
    clearTimeout(holding);
    holding = undefined;
    overdue = false;
  }

  async function commitGroup(group: Waiting[]): Promise<void> {
    let result: Deno.KvCommitResult | Deno.KvCommitError;
    try {
      const operation = group.reduce(
        (operation, { write }) => write.add(operation),
        kv.atomic(),
      );
      const steps = group.flatMap(({ write }) => write.queue ?? []);
      result = await commitRetrying(
        queueSteps(operation, queue, steps, bytes),
      );
    } catch (error) {
      // Deno KV refuses an operation over its limits with a TypeError,
      // before writing anything; a lock that outlasted commitRetrying()'s
      // patience is one too, but nobody's fault: split, each half would
      // wait as long again.
      if (
        group.length === 1 || !(error instanceof TypeError) || isLocked(error)
      ) {
        for (const waiter of group) waiter.reject(error);
        return;
      }
      result = { ok: false };
    }
    if (result.ok || group.length === 1) {
      for (const waiter of group) waiter.resolve(result);
      return;
    }
    const half = Math.ceil(group.length / 2);
    await commitGroup(group.slice(0, half));
    await commitGroup(group.slice(half));
  }

  /** Commits the writes waiting, once they stop coming, then those after. */
  async function commitWaiting(): Promise<void> {
    timer = undefined;
    while (waiting.length > 0) {
      // At most `idle`: a clock set back would otherwise hold the writes
      // for as long as it went back.
      const quiet = Math.min(lastWrite + idle - Date.now(), idle);
      if (
        waiting.length < limit && quiet > 0 && !closed &&
        arrived && !overdue
      ) {
        hold();
        wait(quiet);
        return;
      }
      committing = true;
      const group: Waiting[] = [];
      const keys = new Set<string>();
      const later: Waiting[] = [];
      for (const waiter of waiting) {
        if (group.length === limit || keys.has(waiter.write.key)) {
          later.push(waiter);
        } else {
          keys.add(waiter.write.key);
          group.push(waiter);
        }
      }
      waiting = later;
      // Those left (on a key taken, or over the limit) came while the bound
      // ran: they keep it, and commit after this one at once if it is over.
      if (later.length === 0) release();
      await commitGroup(group);
      committing = false;
    }
  }

  /** Commits what waits now, rather than at its timer. */
  function commitNow(): void {
    clearTimeout(timer);
    void commitWaiting();
  }

  return {
    commit(write) {
      const { promise, resolve, reject } = Promise.withResolvers<
        Deno.KvCommitResult | Deno.KvCommitError
      >();
      waiting.push({ write, resolve, reject });
      lastWrite = Date.now();
      arrived = true;
      // During a commit too: waiting for it is waiting, and the writes that
      // come meanwhile commit next, at once if it outlasted their bound.
      if (committing) hold();
      else if (waiting.length >= limit || closed) commitNow();
      else if (timer === undefined) {
        hold();
        wait(idle);
      }
      return promise;
    },
    close() {
      closed = true;
      if (!committing && waiting.length > 0) commitNow();
    },
  };
}

// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// A step runs once while the processes on one database live, though Deno
// KV may deliver its message twice at once (to two processes on one file,
// or again to one whose task runs long). Before running a step, a backend
// claims it in its chain's progress with an atomic check (in its write
// batch, with the claims of other deliveries), for a lease it renews while
// the attempt runs; a copy delivered meanwhile is put back, to
// come back once the claim would have lapsed, in case its holder died.
// Running the step and writing its outcome is _consumer.ts's.

import {
  commitRetrying,
  enqueueMessage,
  enqueueStep,
  type Progress,
  type Step,
  stepKey,
  type StepQueue,
} from "./_step.ts";
import type { WriteBatch } from "./_batch_writes.ts";

/**
 * A backend as it claims steps: where its steps are queued, and who it is
 * in the claims it writes.
 */
export interface Claimant extends StepQueue {
  /** Whether the backend closed: a step delivered now is put back, not run. */
  closing: boolean;
  /** This backend, in the claims it writes: unique to it. */
  readonly holder: string;
  /**
   * Milliseconds a claim lasts unless renewed (a third of it apart): how
   * long a step whose process died holding it waits before another runs it.
   */
  readonly lease: number;
  /** The steps this backend runs now, by `stepKey()`, each until it is written. */
  readonly claimed: Map<string, Promise<unknown>>;
  /** Commits its claims and outcomes, those of concurrent deliveries together. */
  readonly batch: WriteBatch;
}

/** How long a claim on a step lasts unless renewed. */
export const LEASE = 30_000;

/**
 * Claims a live step for this backend, in its chain's progress: the claimed
 * progress, or nothing when the step is not this delivery's to run (acted
 * on already, run here already, claimed by another process, or the backend
 * closed; the step is then put back as needed).
 */
export async function claim(
  step: Step,
  consumer: Claimant,
): Promise<Deno.KvEntry<Progress> | undefined> {
  const { kv, keys } = consumer;
  const progressKey = keys.progress(step.chain);
  for (
    let progress = await kv.get<Progress>(progressKey);;
    progress = await kv.get<Progress>(progressKey)
  ) {
    // A message already acted on, delivered again: nothing to do.
    if (
      progress.value?.index !== step.index ||
      progress.value.attempt !== step.attempt
    ) return;
    // Delivered again while this backend runs it (Deno KV gives a message
    // that runs long up for dead, and queues it again): its run writes it.
    const running = consumer.claimed.get(stepKey(step));
    if (running !== undefined) return void await running;
    // Run by another process: this copy comes back once the claim would
    // have lapsed, in case that process died.
    const { lease } = progress.value;
    if (
      lease !== undefined && lease.holder !== consumer.holder &&
      lease.until > Date.now()
    ) {
      const delay = lease.until - Date.now();
      return void await putBack(step, progress, consumer, delay);
    }
    // Closed meanwhile: the step waits for a process that listens.
    if (consumer.closing) {
      return void await putBack(step, progress, consumer);
    }
    const value: Progress = {
      index: step.index,
      attempt: step.attempt,
      lease: { holder: consumer.holder, until: Date.now() + consumer.lease },
    };
    const claimed = await consumer.batch.commit({
      key: step.chain,
      add: (operation) => operation.check(progress).set(progressKey, value),
    });
    if (claimed.ok) {
      return { key: progressKey, value, versionstamp: claimed.versionstamp };
    }
    // Claimed or acted on meanwhile, by another delivery: look again.
  }
}

/**
 * Renews the claim on a step every third of a lease, while its attempt
 * runs. `stop()` ends the renewals and resolves with the claim as last
 * written, once no renewal is in flight. A renewal that fails leaves the
 * claim as it was: the outcome's check then tells whether it was lost.
 */
export function renewLease(
  step: Step,
  claimed: Deno.KvEntry<Progress>,
  consumer: Claimant,
): { stop(): Promise<Deno.KvEntry<Progress>> } {
  const { kv, keys, holder, lease } = consumer;
  let latest = claimed;
  let renewing = Promise.resolve();
  const renew = async () => {
    const value: Progress = {
      index: step.index,
      attempt: step.attempt,
      lease: { holder, until: Date.now() + lease },
    };
    try {
      const renewed = await commitRetrying(
        kv.atomic().check(latest).set(keys.progress(step.chain), value),
      );
      if (renewed.ok) {
        latest = { ...latest, value, versionstamp: renewed.versionstamp };
      }
    } catch {
      // The database closed, or stayed locked: the claim lapses as it is.
    }
  };
  const timer = setInterval(() => {
    renewing = renewing.then(renew);
  }, lease / 3);
  return {
    async stop() {
      clearInterval(timer);
      await renewing;
      return latest;
    },
  };
}

/**
 * Puts a step back on the queue, checked against its progress `current`,
 * delayed by `delay` (by default the first redelivery step: a process
 * still listening with its backend closed gives it up again at that pace,
 * without using up its deliveries). A step this backend claimed is released
 * with it. If the database closed too, nothing is written, and nothing
 * acknowledged either: Deno KV delivers the unfinished message again once
 * the database is next opened, as after a crash.
 */
export async function putBack(
  step: Step,
  current: Deno.KvEntryMaybe<Progress>,
  consumer: Claimant,
  delay = consumer.redelivery[0] ?? 0,
): Promise<void> {
  const { kv } = consumer;
  const ours = current.value?.lease?.holder === consumer.holder;
  try {
    await commitRetrying(
      ours || current.value?.lease === undefined
        ? enqueueStep(kv.atomic().check(current), consumer, step, delay)
        // Another's claim stays as it is: only the copy is queued.
        : enqueueMessage(kv.atomic().check(current), consumer, step, delay),
    );
  } catch (error) {
    if (!(error instanceof Deno.errors.BadResource)) throw error;
  }
}

// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Keyed tasks on the KV backend, as web processes store them: a chain's
// keyed tasks leave it for their lanes (_lane.ts), each a chain of its own
// one task, and its other tasks keep their positions (`Step.keyed`). Each
// keyed task is added to its lane as its `onDuplicate` says, in one atomic
// operation with the rest of its chain, checked against the lane's record,
// its head's progress and any entry it replaces: of two processes storing
// into one lane at once, one commits and the other reads the lane again and
// decides again. Within a process, the stores into one lane take turns.

import type { LaneEntry } from "./_lane.ts";
import { type KeyedItem, type Plan, planLane } from "./_keyed_plan.ts";
import type { Consumer } from "./_consumer.ts";
import { commitRetrying, enqueueStep, firstStep, type Step } from "./_step.ts";
import { ENVELOPE_BYTES } from "./_message_budget.ts";
import { cannotStore, refusesQueue } from "./_queue_support.ts";
import {
  messageSize,
  structuredSizeBound,
} from "../durable/_structured_size.ts";
import { NAMES_REFRESH } from "../durable/_unknown_tasks.ts";
import { envelope } from "../durable/_envelope.ts";
import { tellDeduplicated } from "../core/_report.ts";
import { escapeControls } from "../api/_describe_task.ts";
import type {
  BackendChain,
  BackendTask,
  EnqueueResult,
} from "../api/task_backend.ts";
import type { RequestSummary } from "../api/task_info.ts";

/** The most a Deno KV message, or value, may weigh. */
const MAX_MESSAGE = 64 * 1024;
/**
 * Keyed tasks per request: each lane costs its commit up to three of
 * Deno KV's 100 checks (its record, its head's progress, an entry it
 * replaces).
 */
const MAX_KEYED = 32;
/**
 * Bytes of a request's keyed tasks' messages, each written up to twice (an
 * entry and a message), within Deno KV's 800 KiB per atomic operation.
 */
const MAX_KEYED_BYTES = 320 * 1024;
/** The longest Deno KV key. */
const MAX_KEY = 2048;
/** Bytes of keys per atomic operation, Deno KV's limit, with room to spare. */
const MAX_KEYS_BYTES = 64 * 1024;
/** The keys a keyed task's store may write or check, about its lane's size each. */
const KEYS_PER_TASK = 8;

/** What a request's keyed tasks take of the one operation that stores them. */
interface Room {
  tasks: number;
  bytes: number;
  keyBytes: number;
}

const encoder = new TextEncoder();
/** What a keyed task's id weighs at most in its message: a chain's id and a position. */
const ID = "0".repeat(48);

/** The keyed tasks of one KV backend, as its web side stores them. */
export class Lanes {
  readonly #consumer: Consumer;
  /** Per lane, the last store of this process into it. */
  readonly #turns = new Map<string, Promise<unknown>>();
  readonly #rooms = new WeakMap<object, Room>();
  /**
   * The heads this process watches, having put tasks behind them: one
   * watch each, which comes back as long as the head lives.
   */
  readonly #watched = new Set<string>();
  /** When this process last wrote the names of its tasks (kv_backend.ts). */
  #announced = -Infinity;

  constructor(consumer: Consumer) {
    this.#consumer = consumer;
  }

  /**
   * Checks a keyed task as it is added: its own message must fit Deno KV's
   * 64 KiB, its lane's key Deno KV's 2 KiB, and its request's keyed tasks
   * one atomic operation.
   *
   * @returns What takes its room, once the task is accepted: a task refused
   * by a later check takes none.
   * @throws {TypeError} If it does not fit.
   */
  accept(
    task: BackendTask,
    chain: { readonly request?: RequestSummary | undefined },
  ): () => void {
    const action = `Cannot add task "${escapeControls(task.name)}"`;
    const message = {
      tasks: [{ name: task.name, args: task.args, id: ID, index: 0 }],
      request: chain.request,
      key: task.key,
    };
    let bytes = ENVELOPE_BYTES + structuredSizeBound(message);
    if (bytes > MAX_MESSAGE) bytes = ENVELOPE_BYTES + messageSize(message);
    if (bytes > MAX_MESSAGE) {
      throw new TypeError(
        `${action} as its message would weigh ${bytes} bytes, more than the ${MAX_MESSAGE} a Deno KV message may hold`,
      );
    }
    const keyBytes = encoder.encode(
      JSON.stringify(this.#consumer.keys.lane(task.name, task.key!, 0)),
    ).length;
    if (keyBytes > MAX_KEY) {
      throw new TypeError(
        `${action} as its lane's Deno KV key (its prefix, name and key) would weigh ${keyBytes} bytes, more than the ${MAX_KEY} Deno KV allows`,
      );
    }
    const room = this.#rooms.get(chain) ?? { tasks: 0, bytes: 0, keyBytes: 0 };
    const after: Room = {
      tasks: room.tasks + 1,
      bytes: room.bytes + bytes,
      keyBytes: room.keyBytes + KEYS_PER_TASK * keyBytes,
    };
    const fit =
      `${action} as its request's keyed tasks would not fit in the one Deno KV atomic operation that stores them`;
    if (after.tasks > MAX_KEYED || after.bytes > MAX_KEYED_BYTES) {
      throw new TypeError(
        `${fit}: at most ${MAX_KEYED} keyed tasks, of ${MAX_KEYED_BYTES} bytes in all`,
      );
    }
    // Long keys run out of room before 32 tasks do: say so.
    if (after.keyBytes > MAX_KEYS_BYTES) {
      throw new TypeError(
        `${fit}: their lanes' keys would weigh ${after.keyBytes} bytes (${KEYS_PER_TASK} keys a task, each about as long as its lane's, this one's ${keyBytes} bytes), more than the ${MAX_KEYS_BYTES} allowed`,
      );
    }
    return () => this.#rooms.set(chain, after);
  }

  /**
   * Stores a chain with keyed tasks: its other tasks as a chain that counts
   * their positions past the keyed ones, and each keyed task into its lane,
   * all in one atomic operation.
   *
   * @returns The positions of the keyed tasks deduplicated.
   */
  async enqueue(chain: BackendChain): Promise<EnqueueResult> {
    const { kv, keys } = this.#consumer;
    const request = envelope(chain);
    const items: KeyedItem[] = [];
    const keyed: number[] = [];
    const others: Step["tasks"] = [];
    chain.tasks.forEach(({ name, args, key, onDuplicate, delay }, position) => {
      if (key === undefined) return void others.push({ name, args: [...args] });
      const id = `${chain.id}:${position}`;
      keyed.push(position);
      items.push({
        step: firstStep(id, [{ name, args: [...args], id, index: position }], {
          key,
          ...request,
        }),
        onDuplicate: onDuplicate ?? "queue",
        delay: delay ?? 0,
        position,
      });
    });
    const step = others.length === 0
      ? undefined
      : firstStep(chain.id, others, { keyed, ...request });
    const deduplicated = await this.#store(
      items,
      (operation) =>
        step === undefined ? operation : enqueueStep(
          operation.check({ key: keys.progress(chain.id), versionstamp: null }),
          this.#consumer,
          step,
        ),
      async () => {
        if (step === undefined) return true;
        const progress = await kv.get(keys.progress(chain.id));
        if (progress.versionstamp === null) return true;
        throw new Error(`Chain ${chain.id} is already queued`);
      },
    );
    return { deduplicated: deduplicated! };
  }

  /**
   * Puts a failed keyed task back in its lane, behind the tasks waiting
   * there, and removes the failed task, in one atomic operation.
   *
   * @returns Whether the failed task was still there, and this call put it back.
   */
  async retry(
    failed: Deno.KvEntry<unknown>,
    step: Step,
  ): Promise<boolean> {
    const { kv } = this.#consumer;
    const stored = await this.#store(
      [{ step, onDuplicate: "queue", delay: 0 }],
      (operation) => operation.check(failed).delete(failed.key),
      async () =>
        (await kv.get(failed.key)).versionstamp === failed.versionstamp,
    );
    return stored !== undefined;
  }

  /**
   * Stores `items` into their lanes, with what `extra` adds, once this
   * process's earlier stores into the same lanes are over; when the commit
   * fails, `conflicted()` says whether to read the lanes again and try
   * again (or throws why not).
   *
   * @returns The positions deduplicated; undefined if `conflicted()` gave up.
   */
  async #store(
    items: readonly KeyedItem[],
    extra: (operation: Deno.AtomicOperation) => Deno.AtomicOperation,
    conflicted: () => Promise<boolean>,
  ): Promise<number[] | undefined> {
    const lanes = new Map<string, KeyedItem[]>();
    for (const item of items) {
      const id = JSON.stringify([item.step.tasks[0]!.name, item.step.key]);
      lanes.set(id, [...lanes.get(id) ?? [], item]);
    }
    const turn = this.#take([...lanes.keys()]);
    try {
      await turn.ready;
      await this.#announce();
      for (let pause = 1;; pause = Math.min(pause * 2, 50)) {
        const now = Date.now();
        let operation = extra(this.#consumer.kv.atomic());
        const plans: Plan[] = [];
        for (const laneItems of lanes.values()) {
          const plan = await planLane(this.#consumer, laneItems, now);
          const watch = plan.behind !== undefined &&
            !this.#watched.has(plan.behind.chain);
          operation = plan.write(operation, watch);
          plans.push(plan);
        }
        if ((await this.#commit(operation)).ok) {
          this.#watch(plans);
          for (const { replaced } of plans) {
            replaced.forEach(this.#tellReplaced);
          }
          return plans.flatMap(({ deduplicated }) => deduplicated);
        }
        if (!await conflicted()) return undefined;
        // Another process stored into a lane meanwhile.
        await new Promise((resolve) =>
          setTimeout(resolve, Math.random() * pause)
        );
      }
    } finally {
      turn.done();
    }
  }

  /** Notes the heads the plans committed watch, forgetting all past 1,000. */
  #watch(plans: readonly Plan[]): void {
    for (const { behind } of plans) {
      if (behind === undefined) continue;
      if (this.#watched.size >= 1_000) this.#watched.clear();
      this.#watched.add(behind.chain);
    }
  }

  /** The turn of a store into `lanes`, behind this process's earlier ones. */
  #take(lanes: readonly string[]): { ready: Promise<unknown>; done(): void } {
    const ready = Promise.all(lanes.map((id) => this.#turns.get(id)));
    const { promise, resolve } = Promise.withResolvers<void>();
    for (const id of lanes) this.#turns.set(id, promise);
    return {
      ready,
      done: () => {
        resolve();
        for (const id of lanes) {
          if (this.#turns.get(id) === promise) this.#turns.delete(id);
        }
      },
    };
  }

  /** Commits, saying so when the database cannot queue (KV Connect). */
  async #commit(
    operation: Deno.AtomicOperation,
  ): Promise<Deno.KvCommitResult | Deno.KvCommitError> {
    try {
      return await commitRetrying(operation);
    } catch (error) {
      throw refusesQueue(error) ? cannotStore(error) : error;
    }
  }

  /**
   * A task of an earlier store was replaced: its end is told to the
   * backend's `onTaskEnd` (its own and its handlers'), as the attempts it
   * runs are; it was handed over, so no handler's `stats` counts it.
   */
  #tellReplaced = ({ step }: LaneEntry): void => {
    const { name, id, index } = step.tasks[0]!;
    tellDeduplicated(this.#consumer.config.onTaskEnd, {
      name,
      index: index!,
      attempt: 0,
      id: id!,
      request: step.request,
      delivered: step.delivered,
    });
  };

  /**
   * Writes the names of this process's tasks, with the time, as the group
   * commit of chains without keyed tasks does (kv_backend.ts): for
   * listeners that lack one, to say so.
   */
  async #announce(): Promise<void> {
    if (Date.now() - this.#announced < NAMES_REFRESH) return;
    const now = this.#announced = Date.now();
    const { kv, keys, config } = this.#consumer;
    await Promise.all(
      [...config.registry.keys()].map((name) =>
        kv.set(keys.tasks(name), now).catch(() => {})
      ),
    );
  }
}

// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// What the tasks of a flood across a database outage did. Delivery is at
// least once: a task that ended while the database went away could not be
// recorded as done, and BullMQ's stalled-job check gives it back, so it runs
// again, right after itself in its chain (the next task waits for it). Only a
// task the worker had in hands when the database went down may run twice,
// and at most as many as the worker runs at once; every other task runs
// once, in order. Those are the tasks first run before the database came
// back: none is fetched while it is down, but the worker goes on running, and
// fetching, while it is being stopped (pg_ctl takes a while), and begins a job
// whose answer came in just before.

import assert from "node:assert/strict";

/** The runs of a flood's tasks, by chain and by task id. */
export class FloodRuns {
  /** Each chain's runs, in the order they began: their task ids and indexes. */
  readonly #byChain = new Map<string, { id: string; index: number }[]>();
  readonly #byId = new Map<string, number>();
  /** Tasks first run before the database came back. */
  readonly #beforeBack = new Set<string>();
  #back = false;
  #distinct = 0;
  #expected = Infinity;
  readonly #all = Promise.withResolvers<void>();

  /** Records a run of task `index` of `chain`, whose context's id is `id`. */
  ran(id: string, chain: string, index: number): void {
    this.#byChain.set(chain, [...this.#byChain.get(chain) ?? [], {
      id,
      index,
    }]);
    const count = (this.#byId.get(id) ?? 0) + 1;
    this.#byId.set(id, count);
    if (count > 1) return;
    if (!this.#back) this.#beforeBack.add(id);
    if (++this.#distinct === this.#expected) this.#all.resolve();
  }

  /** The database is about to come back. */
  back(): void {
    this.#back = true;
  }

  /** How many tasks ran, each counted once. */
  get distinct(): number {
    return this.#distinct;
  }

  /** Resolves once `expected` tasks have run, each counted once. */
  all(expected: number): Promise<void> {
    this.#expected = expected;
    if (this.#distinct === expected) this.#all.resolve();
    return this.#all.promise;
  }

  /** How many tasks ran twice. */
  get twice(): number {
    return [...this.#byId.values()].filter((count) => count > 1).length;
  }

  /**
   * Asserts that each chain ran the tasks `accepted` says it had, in order,
   * and that a task ran twice only as the outage allows.
   */
  check(accepted: ReadonlyMap<string, number>, concurrency: number): void {
    for (const [chain, n] of accepted) {
      const runs = this.#byChain.get(chain) ?? [];
      const indexes = runs.map(({ index }) => index);
      // A run again is the same task, by its id, right after itself: the
      // same index under another id is a task stored twice.
      const once = runs.filter(({ id }, i) => runs[i - 1]?.id !== id);
      assert.deepEqual(
        once.map(({ index }) => index),
        [...Array(n).keys()],
        `${chain} ran ${indexes}`,
      );
      assert.ok(runs.length - once.length <= 1, `${chain} ran ${indexes}`);
    }
    const twice = [...this.#byId].filter(([, count]) => count !== 1);
    assert.ok(
      twice.every(([id, count]) => count === 2 && this.#beforeBack.has(id)),
      `ran more than once, not as the outage allows: ${twice}`,
    );
    assert.ok(twice.length <= concurrency, `ran twice: ${twice}`);
  }
}

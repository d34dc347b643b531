// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/** An item waiting for the commit that stores it. */
interface Waiting<T> {
  item: T;
  signal: AbortSignal | undefined;
  settled: boolean;
  resolve: () => void;
  reject: (error: unknown) => void;
}

/** The items waiting with one signal, and its one listener. */
interface Watch<T> {
  waiters: Set<Waiting<T>>;
  onAbort: () => void;
}

/** Stores one item; `idle()` resolves once no item is left unsettled. */
export interface GroupCommit<T> {
  (item: T, signal?: AbortSignal): Promise<void>;
  idle(): Promise<void>;
}

/** How {@linkcode groupCommit} treats a commit that throws. */
export interface GroupCommitOptions {
  /**
   * Whether an error may be one item's fault, so that splitting the group
   * finds the item.
   *
   * @default {() => true}
   */
  split?: (error: unknown) => boolean;
  /**
   * For an error that is nobody's fault: milliseconds to wait before
   * committing the group again, after `failures` failed commits in a row
   * (from 1), or undefined to reject the group at once.
   *
   * @default {() => undefined}
   */
  retry?: (error: unknown, failures: number) => number | undefined;
}

/**
 * Group commit: returns a function that stores one item, resolving once it is
 * stored. Items handed in while a commit is in flight wait, and the next
 * commit takes up to `limit` of them at once; the first waits one microtask,
 * so that the items handed in together (the runner hands chains over in one
 * timer callback) share it. A commit stores all of its group or none: if it
 * throws, each half is tried on its own, down to the item at fault, which
 * alone is rejected with what its own commit threw. An error that `split`
 * says is not an item's fault (a lost connection) is not split, since
 * splitting would only repeat it: the whole group is rejected, or, if `retry`
 * gives a delay, committed again after it, with the items that arrived
 * meanwhile, until it is stored.
 *
 * An item handed in with a signal leaves as soon as the signal aborts,
 * rejected with its reason, even while a commit that holds it is in flight
 * (that commit may still store it).
 *
 * @param commit Stores a group of items; throws to store none of them. Its
 * second argument says whether the commit before it failed for nobody's
 * fault, which may have stored its items although it threw (a connection
 * lost after the write).
 * @param limit The most items one commit takes.
 * @param options How errors are told apart.
 */
export function groupCommit<T>(
  commit: (group: T[], retrying: boolean) => Promise<void>,
  limit: number,
  options: GroupCommitOptions = {},
): GroupCommit<T> {
  const { split = () => true, retry = () => undefined } = options;
  let waiting: Waiting<T>[] = [];
  let committing = false;
  let unsettled = 0;
  const idle: (() => void)[] = [];
  /** Ends the pause before a retry early: nothing is left to retry. */
  let wake: (() => void) | undefined;
  // One listener per signal, not per item: many chains may share a signal,
  // and removing one listener of many costs as much as there are.
  const watches = new Map<AbortSignal, Watch<T>>();

  function watch(waiter: Waiting<T>, signal: AbortSignal): void {
    let watching = watches.get(signal);
    if (watching === undefined) {
      const waiters = new Set<Waiting<T>>();
      const onAbort = () => {
        watches.delete(signal);
        for (const waiter of waiters) settle(waiter, true, signal.reason);
      };
      watching = { waiters, onAbort };
      watches.set(signal, watching);
      signal.addEventListener("abort", onAbort, { once: true });
    }
    watching.waiters.add(waiter);
  }

  function unwatch(waiter: Waiting<T>, signal: AbortSignal): void {
    const watching = watches.get(signal);
    if (watching === undefined || !watching.waiters.delete(waiter)) return;
    if (watching.waiters.size > 0) return;
    watches.delete(signal);
    signal.removeEventListener("abort", watching.onAbort);
  }

  function settle(waiter: Waiting<T>, failed: boolean, error?: unknown): void {
    if (waiter.settled) return;
    waiter.settled = true;
    if (waiter.signal !== undefined) unwatch(waiter, waiter.signal);
    if (failed) waiter.reject(error);
    else waiter.resolve();
    if (--unsettled > 0) return;
    for (const resolve of idle.splice(0)) resolve();
    wake?.();
  }

  function pause(delay: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, delay);
      wake = done;
    });
  }

  let failures = 0;

  /**
   * Commits `group`, split down to the item at fault. Returns the items to
   * commit again and after how long, if a commit failed for nobody's fault.
   * Never rejects.
   */
  async function commitGroup(
    group: Waiting<T>[],
  ): Promise<{ again: Waiting<T>[]; delay: number } | undefined> {
    group = group.filter((waiter) => !waiter.settled);
    if (group.length === 0) return undefined;
    let error: unknown;
    try {
      await commit(group.map((waiter) => waiter.item), failures > 0);
      failures = 0;
      for (const waiter of group) settle(waiter, false);
      return undefined;
    } catch (thrown) {
      error = thrown;
    }
    if (!split(error)) {
      const delay = retry(error, ++failures);
      if (delay !== undefined) return { again: group, delay };
      for (const waiter of group) settle(waiter, true, error);
      return undefined;
    }
    if (group.length === 1) {
      settle(group[0]!, true, error);
      return undefined;
    }
    const half = Math.ceil(group.length / 2);
    const first = await commitGroup(group.slice(0, half));
    // The connection failed: the second half waits for the retry too.
    if (first !== undefined) {
      return {
        again: [...first.again, ...group.slice(half)],
        delay: first.delay,
      };
    }
    return await commitGroup(group.slice(half));
  }

  async function commitWaiting(): Promise<void> {
    while (true) {
      const group: Waiting<T>[] = [];
      while (group.length < limit && waiting.length > 0) {
        for (const waiter of waiting.splice(0, limit - group.length)) {
          if (!waiter.settled) group.push(waiter);
        }
      }
      if (group.length === 0) break;
      const failed = await commitGroup(group);
      if (failed === undefined) continue;
      waiting = [...failed.again, ...waiting];
      if (unsettled > 0) await pause(failed.delay);
    }
    committing = false;
  }

  function store(item: T, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    const stored = Promise.withResolvers<void>();
    const waiter: Waiting<T> = { item, signal, settled: false, ...stored };
    if (signal !== undefined) watch(waiter, signal);
    unsettled++;
    waiting.push(waiter);
    if (!committing) {
      committing = true;
      queueMicrotask(commitWaiting);
    }
    return stored.promise;
  }
  store.idle = (): Promise<void> =>
    unsettled > 0
      ? new Promise<void>((resolve) => void idle.push(resolve))
      : Promise.resolve();
  return store;
}

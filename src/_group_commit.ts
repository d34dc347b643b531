// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/** An item waiting for the commit that stores it. */
interface Waiting<T> {
  item: T;
  resolve: () => void;
  reject: (error: unknown) => void;
}

/** Stores one item; `idle()` resolves once nothing waits or is being stored. */
export interface GroupCommit<T> {
  (item: T): Promise<void>;
  idle(): Promise<void>;
}

/**
 * Group commit: returns a function that stores one item, resolving once it is
 * stored. Items handed in while a commit is in flight wait, and the next
 * commit takes up to `limit` of them at once; the first waits one microtask,
 * so that the items handed in together (the runner hands chains over in one
 * timer callback) share it. A commit stores all of its group or none: if it
 * throws, each half is tried on its own, down to the item at fault, which
 * alone is rejected with what its own commit threw. An error that `split`
 * says is not an item's fault (a lost connection) rejects the whole group at
 * once: splitting would only repeat it.
 *
 * @param commit Stores a group of items; throws to store none of them.
 * @param limit The most items one commit takes.
 * @param split Whether an error may be one item's fault.
 */
export function groupCommit<T>(
  commit: (group: T[]) => Promise<void>,
  limit: number,
  split: (error: unknown) => boolean = () => true,
): GroupCommit<T> {
  const waiting: Waiting<T>[] = [];
  let committing = false;
  const idle: (() => void)[] = [];

  /** Commits `group`, split down to the item at fault. Never rejects. */
  async function commitGroup(group: Waiting<T>[]): Promise<void> {
    try {
      await commit(group.map((waiter) => waiter.item));
      for (const waiter of group) waiter.resolve();
      return;
    } catch (error) {
      if (group.length === 1) return group[0]!.reject(error);
      if (!split(error)) {
        for (const waiter of group) waiter.reject(error);
        return;
      }
    }
    const half = Math.ceil(group.length / 2);
    await commitGroup(group.slice(0, half));
    await commitGroup(group.slice(half));
  }

  async function commitWaiting(): Promise<void> {
    while (waiting.length > 0) {
      await commitGroup(waiting.splice(0, limit));
    }
    committing = false;
    for (const resolve of idle.splice(0)) resolve();
  }

  function store(item: T): Promise<void> {
    const stored = Promise.withResolvers<void>();
    waiting.push({ item, ...stored });
    if (!committing) {
      committing = true;
      queueMicrotask(commitWaiting);
    }
    return stored.promise;
  }
  store.idle = (): Promise<void> =>
    committing
      ? new Promise<void>((resolve) => void idle.push(resolve))
      : Promise.resolve();
  return store;
}

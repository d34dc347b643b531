// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/** An item waiting for the commit that stores it. */
interface Waiting<T> {
  item: T;
  resolve: () => void;
  reject: (error: unknown) => void;
}

/**
 * Group commit: returns a function that stores one item, resolving once it is
 * stored. Items handed in while a commit is in flight wait, and the next
 * commit takes up to `limit` of them at once; the first waits one microtask,
 * so that the items handed in together (the runner hands chains over in one
 * timer callback) share it. A commit stores all of its group or none: if it
 * throws, each half is tried on its own, down to the item at fault, which
 * alone is rejected with what its own commit threw.
 *
 * @param commit Stores a group of items; throws to store none of them.
 * @param limit The most items one commit takes.
 */
export function groupCommit<T>(
  commit: (group: T[]) => Promise<void>,
  limit: number,
): (item: T) => Promise<void> {
  const waiting: Waiting<T>[] = [];
  let committing = false;

  /** Commits `group`, split down to the item at fault. Never rejects. */
  async function commitGroup(group: Waiting<T>[]): Promise<void> {
    try {
      await commit(group.map((waiter) => waiter.item));
      for (const waiter of group) waiter.resolve();
      return;
    } catch (error) {
      if (group.length === 1) return group[0]!.reject(error);
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
  }

  return (item: T) => {
    const stored = Promise.withResolvers<void>();
    waiting.push({ item, ...stored });
    if (!committing) {
      committing = true;
      queueMicrotask(commitWaiting);
    }
    return stored.promise;
  };
}

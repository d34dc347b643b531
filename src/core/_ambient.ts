// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * What the wrappers need of `AsyncLocalStorage`: it stores a request's
 * `BackgroundTasks`, seen here as an object.
 */
export interface TaskStorage {
  run<R>(tasks: object, fn: () => R): R;
  getStore(): object | undefined;
}

/**
 * Filled in by `get_background_tasks.ts` when it is imported, so that only
 * programs that use ambient access load `node:async_hooks` (about 10 ms of
 * start-up and 4 MB).
 */
export const ambient: {
  storage: TaskStorage | undefined;
  /** Whether some wrapper runs with `ambient: true`. */
  enabled: boolean;
} = { storage: undefined, enabled: false };

/** The storage for a wrapper made with `ambient: true`; throws if it is not loaded. */
export function ambientStorage(action: string): TaskStorage {
  if (ambient.storage === undefined) {
    throw new TypeError(
      `${action} as 'ambient' needs "@afterward/background-tasks/ambient": import getBackgroundTasks from it`,
    );
  }
  ambient.enabled = true;
  return ambient.storage;
}

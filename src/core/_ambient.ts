// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * What the wrappers need of `AsyncLocalStorage`: it stores a request's
 * `BackgroundTasks`, seen here as an object.
 */
export interface AmbientContext {
  run<R>(tasks: object, fn: () => R): R;
  getStore(): object | undefined;
}

/**
 * Filled in by `get_background_tasks.ts` when it is imported, so that only
 * programs that use ambient access load `node:async_hooks` (about 10 ms of
 * start-up and 4 MB).
 */
export const ambient: {
  context: AmbientContext | undefined;
  /** Whether some wrapper runs with `ambient: true`. */
  enabled: boolean;
} = { context: undefined, enabled: false };

/** The context for a wrapper made with `ambient: true`; throws if it is not loaded. */
export function ambientContext(action: string): AmbientContext {
  if (ambient.context === undefined) {
    throw new TypeError(
      `${action} as 'ambient' needs "@afterward/background-tasks/ambient": import getBackgroundTasks from it`,
    );
  }
  ambient.enabled = true;
  return ambient.context;
}

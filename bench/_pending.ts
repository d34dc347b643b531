// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Requests whose responses are still being sent, for the memory
// benchmarks: a wrapped handler that adds trivial tasks, and requests with
// infos whose `completed` settles only when released.

import { type DrainableHandler, withBackgroundTasks } from "../mod.ts";

let sink = 0;
function trivialTask(n: number): void {
  sink += n;
}
// Observable, so that the tasks' work is not dead code.
globalThis.addEventListener("unload", () => void sink);

/**
 * A handler adding `tasksPerRequest` tasks, and `count` calls made up front
 * (so that they are in both measurements alike and the delta is what the
 * wrapper holds); `release()` lets their responses complete.
 */
export function pendingRequests(count: number, tasksPerRequest: number): {
  handler: DrainableHandler;
  calls: { request: Request; info: Deno.ServeHandlerInfo }[];
  release: () => void;
} {
  const released = Promise.withResolvers<void>();
  const handler = withBackgroundTasks((_request, _info, tasks) => {
    for (let i = 0; i < tasksPerRequest; i++) tasks.addTask(trivialTask, i);
    return new Response(null);
  });
  const calls = Array.from({ length: count }, (_, i) => ({
    request: new Request(`http://localhost/orders/${i}?page=1`),
    info: {
      remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 40_000 },
      // Deno creates this promise lazily, for the wrapper: counted as its own.
      get completed() {
        return released.promise.then(() => {});
      },
    } as unknown as Deno.ServeHandlerInfo,
  }));
  return {
    handler,
    calls,
    release: () => released.resolve(),
  };
}

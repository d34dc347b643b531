// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * Memory held by pending work: 10,000 requests whose responses are still
 * being sent (their `info.completed` has not settled), first with one task
 * each, then with ten (100,000 tasks). Bytes per pending request is the heap
 * delta of the first over 10,000; bytes per pending task is the extra heap of
 * the second over its 90,000 extra tasks, each the median of five rounds
 * (a single round is thrown off now and then by what the collector left).
 * Then with one keyed task each (a key per request, so a lane each): what a
 * keyed task costs more than a plain one is the difference with the first.
 * Last, while the task runs: 10,000 requests whose responses were sent and
 * whose one task awaits a promise not yet settled (as a 100 ms task does),
 * against the same task fired with `queueMicrotask()` from a bare handler:
 * what a chain holds for as long as its task runs, which is what the
 * collector copies under a steady rate of long tasks.
 * Counted: everything the wrapper
 * keeps for a request, including the `completed` promise Deno creates only
 * because the wrapper asks for it.
 *
 *   deno task bench:memory
 *   deno run --v8-flags=--expose-gc bench/memory.ts --json
 *
 * @module
 */

import { defineTask, withBackgroundTasks } from "../mod.ts";

const requests = 10_000;
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) {
  console.error("Run with --v8-flags=--expose-gc for exact figures");
  Deno.exit(2);
}

function heapUsed(): number {
  for (let i = 0; i < 3; i++) gc!();
  return Deno.memoryUsage().heapUsed;
}

/**
 * A request whose handler has read its URL, as one that routes does. Deno
 * keeps that string with the request until its response is sent, and the
 * wrapper shares it. Were the URL never read, the wrapper's reading it would
 * add Deno's copy (measured: 155 bytes for these URLs).
 */
function routed(request: Request): Request {
  void request.url;
  return request;
}

let sink = 0;
function trivialTask(n: number): void {
  sink += n;
}
const keyedTask = defineTask((_context, n: number) => trivialTask(n), {
  name: "keyed",
  key: String,
});

/**
 * Heap held by `requests` pending requests with `tasksPerRequest` tasks each,
 * or, with `keyed`, one keyed task each, of a key of its own.
 */
async function pendingHeap(
  tasksPerRequest: number,
  keyed = false,
): Promise<number> {
  const release = Promise.withResolvers<void>();
  let key = 0;
  const handler = withBackgroundTasks((_request, _info, tasks) => {
    if (keyed) tasks.addTask(keyedTask, key++);
    else {for (let i = 0; i < tasksPerRequest; i++) {
        tasks.addTask(trivialTask, i);
      }}
    return new Response(null);
  });
  // The requests and their infos are made up front and kept in both
  // measurements alike, so the delta is what the wrapper holds.
  const calls = Array.from({ length: requests }, (_, i) => ({
    request: routed(new Request(`http://localhost/orders/${i}?page=1`)),
    info: {
      remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 40_000 },
      // Deno creates this promise lazily, for the wrapper: counted as its own.
      get completed() {
        return release.promise.then(() => {});
      },
    } as unknown as Deno.ServeHandlerInfo,
  }));
  const before = heapUsed();
  for (const { request, info } of calls) handler(request, info);
  const held = heapUsed() - before;
  if (handler.stats.pending !== requests * tasksPerRequest) {
    throw new Error(
      `expected every task pending, found ${handler.stats.pending}`,
    );
  }
  release.resolve();
  await handler.drain();
  return held;
}

function median(values: number[]): number {
  return values.toSorted((a, b) => a - b)[values.length >> 1]!;
}

/** Tasks waiting on a promise not yet settled: their resolvers. */
let waiting: (() => void)[] = [];
function waitingTask(): Promise<void> {
  return new Promise<void>((resolve) => waiting.push(resolve));
}
async function longTask(): Promise<void> {
  await waitingTask();
  sink++;
}

/**
 * Bytes per request while its one task runs, wrapped or fired from a bare
 * handler with `queueMicrotask()`: the task's own frames are in both.
 */
async function runningHeap(wrapped: boolean): Promise<number> {
  const handler = wrapped
    ? withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(longTask);
      return new Response(null);
    })
    : () => {
      queueMicrotask(() => void longTask());
      return new Response(null);
    };
  const calls = Array.from({ length: requests }, (_, i) => ({
    request: routed(new Request(`http://localhost/orders/${i}?page=1`)),
    info: {
      remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 40_000 },
      completed: Promise.resolve(),
    } as unknown as Deno.ServeHandlerInfo,
  }));
  waiting = [];
  const before = heapUsed();
  for (const { request, info } of calls) handler(request, info);
  // Every task started: each waits on its promise.
  while (waiting.length < requests) {
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  const held = heapUsed() - before;
  for (const resolve of waiting) resolve();
  waiting = [];
  if ("drain" in handler) await handler.drain();
  return held;
}

// Warm up, so that compiled code and inline caches are not counted.
await pendingHeap(1);
await pendingHeap(10);
await pendingHeap(1, true);
await runningHeap(true);
await runningHeap(false);

const ones: number[] = [];
const tens: number[] = [];
const keyeds: number[] = [];
const runnings: number[] = [];
const fireds: number[] = [];
for (let round = 0; round < 5; round++) {
  ones.push(await pendingHeap(1));
  tens.push(await pendingHeap(10));
  keyeds.push(await pendingHeap(1, true));
  runnings.push(await runningHeap(true));
  fireds.push(await runningHeap(false));
}
const oneTask = median(ones);
const tenTasks = median(tens);
const result = {
  requests,
  bytesPerPendingRequest: Math.round(oneTask / requests),
  bytesPerPendingTask: Math.round((tenTasks - oneTask) / (requests * 9)),
  bytesMorePerKeyedTask: Math.round((median(keyeds) - oneTask) / requests),
  bytesPerRunningRequest: Math.round(median(runnings) / requests),
  bytesPerFiredTask: Math.round(median(fireds) / requests),
};
if (Deno.args.includes("--json")) {
  console.log(JSON.stringify(result));
} else {
  console.log(
    `${result.bytesPerPendingRequest} bytes per pending request (with its first task)`,
  );
  console.log(`${result.bytesPerPendingTask} bytes per further pending task`);
  console.log(
    `${result.bytesMorePerKeyedTask} bytes more when the first task is keyed (a lane of its own)`,
  );
  console.log(
    `${result.bytesPerRunningRequest} bytes per request while its one task runs (the same task fired with queueMicrotask(): ${result.bytesPerFiredTask})`,
  );
}
globalThis.addEventListener("unload", () => void sink);

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

// Warm up, so that compiled code and inline caches are not counted.
await pendingHeap(1);
await pendingHeap(10);
await pendingHeap(1, true);

const ones: number[] = [];
const tens: number[] = [];
const keyeds: number[] = [];
for (let round = 0; round < 5; round++) {
  ones.push(await pendingHeap(1));
  tens.push(await pendingHeap(10));
  keyeds.push(await pendingHeap(1, true));
}
const oneTask = median(ones);
const tenTasks = median(tens);
const result = {
  requests,
  bytesPerPendingRequest: Math.round(oneTask / requests),
  bytesPerPendingTask: Math.round((tenTasks - oneTask) / (requests * 9)),
  bytesMorePerKeyedTask: Math.round((median(keyeds) - oneTask) / requests),
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
}
globalThis.addEventListener("unload", () => void sink);

// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * Soak test: a real `Deno.serve` on 127.0.0.1 takes `--requests` requests from
 * `--clients` concurrent clients; each request adds three tasks (synchronous,
 * asynchronous, and one that waits for a timer). It checks that every task
 * ran exactly once and in its request's order, that nothing is pending after
 * `drain()`, and how the heap compares with its baseline.
 *
 *   deno task soak                       # 50,000 requests, 64 clients
 *   deno run --v8-flags=--expose-gc --allow-net=127.0.0.1 bench/soak.ts --requests 5000 --json
 *
 * Exits with 1 when a check fails.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { withBackgroundTasks } from "../mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    requests: { type: "string", default: "50000" },
    clients: { type: "string", default: "64" },
    json: { type: "boolean", default: false },
  },
});
const requests = Number(values.requests);
const clients = Number(values.clients);
const tasksPerRequest = 3;

const gc = (globalThis as { gc?: () => void }).gc;
function heapUsed(): number {
  // Several passes let weak references and finalizers settle.
  for (let i = 0; i < 3; i++) gc?.();
  return Deno.memoryUsage().heapUsed;
}

// steps[id] is the last step that ran for request id: 0 none, 3 all.
const steps = new Uint8Array(requests);
let executions = 0;
let duplicates = 0;
let outOfOrder = 0;

function record(id: number, step: number): void {
  executions++;
  const last = steps[id]!;
  if (last >= step) duplicates++;
  else if (last !== step - 1) outOfOrder++;
  steps[id] = Math.max(last, step);
}

const handler = withBackgroundTasks((request, _info, tasks) => {
  const id = Number(new URL(request.url).searchParams.get("id"));
  tasks.addTask(record, id, 1);
  tasks.addTask(
    async (n: number, step: number) => {
      await Promise.resolve();
      record(n, step);
    },
    id,
    2,
  );
  tasks.addTask(
    async (n: number, step: number) => {
      await new Promise((resolve) => setTimeout(resolve, 0));
      record(n, step);
    },
    id,
    3,
  );
  return new Response("ok");
});

const server = Deno.serve(
  { hostname: "127.0.0.1", port: 0, onListen() {} },
  handler,
);
const origin = `http://127.0.0.1:${server.addr.port}`;

async function load(ids: Iterator<number>): Promise<void> {
  for (let next = ids.next(); !next.done; next = ids.next()) {
    const response = await fetch(`${origin}/?id=${next.value}`);
    await response.arrayBuffer();
    if (response.status !== 200) throw new Error(`status ${response.status}`);
  }
}

// Warm up on the first requests so the baseline includes the JIT's code and
// the connection pool, then measure the rest.
const warmup = Math.min(1_000, Math.floor(requests / 10));
const all = Array.from({ length: requests }, (_, id) => id);
const warmupIds = all.slice(0, warmup).values();
await Promise.all(Array.from({ length: clients }, () => load(warmupIds)));
await handler.drain();
const heapBefore = heapUsed();

const startedAt = performance.now();
const rest = all.slice(warmup).values();
await Promise.all(Array.from({ length: clients }, () => load(rest)));
const respondedAt = performance.now();
await handler.drain();
const drainedAt = performance.now();
const pendingAfter = handler.stats.pending;
const heapAfter = heapUsed();
await server.shutdown();

const lost = steps.reduce((count, last) => count + (last === 3 ? 0 : 1), 0);
const result = {
  requests,
  clients,
  executions,
  expected: requests * tasksPerRequest,
  lost,
  duplicates,
  outOfOrder,
  pendingAfter,
  heapBefore,
  heapAfter,
  heapDelta: heapAfter - heapBefore,
  gc: gc !== undefined,
  responsesPerSecond: Math.round(
    (requests - warmup) / ((respondedAt - startedAt) / 1000),
  ),
  drainMs: Math.round(drainedAt - respondedAt),
};
const ok = result.executions === result.expected && lost === 0 &&
  duplicates === 0 && outOfOrder === 0 && pendingAfter === 0;

if (values.json) {
  console.log(JSON.stringify({ ok, ...result }));
} else {
  const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(2)} MiB`;
  console.log(`requests        ${requests} from ${clients} clients`);
  console.log(`executions      ${executions} of ${result.expected}`);
  console.log(`lost            ${lost} requests with a task missing`);
  console.log(`duplicated      ${duplicates}`);
  console.log(`out of order    ${outOfOrder}`);
  console.log(`pending after   ${pendingAfter}`);
  console.log(
    `heap            ${mib(heapBefore)} before, ${mib(heapAfter)} after (${
      mib(result.heapDelta)
    })${gc ? "" : ", without --expose-gc"}`,
  );
  console.log(
    `throughput      ${result.responsesPerSecond} responses/s; drained ${result.drainMs} ms after the last`,
  );
  console.log(ok ? "ok" : "FAILED");
}
if (!ok) Deno.exit(1);

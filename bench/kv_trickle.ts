// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * How long a Deno KV backend's tasks wait under a steady trickle, the load
 * of an ordinary day rather than a flood: chains of two trivial tasks,
 * stored by one backend at `--rate` chains a second for `--seconds`, run by
 * the same process's listener; with `--work MS`, the first task takes a
 * random time up to MS ms, as real tasks do, so that their outcomes come
 * spread out rather than in the bursts Deno KV delivers messages in. For
 * each chain: from its store to its first task's start, and from the first
 * task's end to the second's start (the outcome's commit, the next step's
 * message and its claim). Medians and
 * 99th percentiles, in ms. It imports the library from the working
 * directory, so that one copy of it measures an older checkout too.
 *
 *   deno run -A --unstable-kv bench/kv_trickle.ts --rate 125 --seconds 10
 *   deno run -A --unstable-kv bench/kv_trickle.ts --rate 250 --work 200
 *   (cd ../base && deno run -A --unstable-kv ../project/bench/kv_trickle.ts)
 *
 * @module
 */

import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    rate: { type: "string", default: "125" },
    seconds: { type: "string", default: "10" },
    work: { type: "string", default: "0" },
  },
});
const rate = Number(values.rate);
const seconds = Number(values.seconds);
const work = Number(values.work);
const root = new URL(`file://${Deno.cwd()}/`);
const { defineTask, withBackgroundTasks } = (await import(
  new URL("mod.ts", root).href
)) as typeof import("../mod.ts");
const { kvBackend } = (await import(
  new URL("kv.ts", root).href
)) as typeof import("../kv.ts");

const toFirst: number[] = [];
const between: number[] = [];
const ended = new Map<number, number>();
let done = 0;
const all = Promise.withResolvers<void>();
const total = Math.round(rate * seconds);

const first = defineTask(async (_context, chain: number, at: number) => {
  toFirst.push(performance.timeOrigin + performance.now() - at);
  if (work > 0) {
    await new Promise((resolve) => setTimeout(resolve, Math.random() * work));
  }
  ended.set(chain, performance.now());
}, { name: "first" });
const second = defineTask((_context, chain: number) => {
  between.push(performance.now() - ended.get(chain)!);
  ended.delete(chain);
  if (++done === total) all.resolve();
}, { name: "second" });

const path = await Deno.makeTempFile({ suffix: ".sqlite3" });
const kv = await Deno.openKv(path);
const backend = kvBackend({ kv, tasks: [first, second] });
const handler = withBackgroundTasks((request, _info, tasks) => {
  const chain = Number(new URL(request.url).searchParams.get("chain"));
  tasks.addTask(first, chain, performance.timeOrigin + performance.now());
  tasks.addTask(second, chain);
  return new Response("ok");
}, { backend });
const info = {
  remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 1 },
  completed: Promise.resolve(),
} as unknown as Deno.ServeHandlerInfo;

// One chain every 1000 / rate ms, on a timer, as requests would come.
const start = performance.now();
for (let chain = 0; chain < total; chain++) {
  const due = start + chain * 1000 / rate;
  const wait = due - performance.now();
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  await handler(new Request(`http://localhost/?chain=${chain}`), info);
}
await all.promise;
await backend.close();
kv.close();
await Deno.remove(path);

function summary(values: number[]): string {
  const sorted = values.toSorted((a, b) => a - b);
  const at = (q: number) =>
    sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))]!;
  return `median ${at(0.5).toFixed(1)} ms, p99 ${at(0.99).toFixed(1)} ms`;
}
console.log(
  `${total} chains of two tasks at ${rate}/s, the first taking up to ${work} ms: store to first task ${
    summary(toFirst)
  }; first task's end to second's start ${summary(between)}`,
);

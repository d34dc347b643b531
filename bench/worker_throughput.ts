// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * Worker throughput: how many trivial tasks per second the backends run once
 * they are queued. BullMQ with 1 and then 2 worker processes (each with
 * `--concurrency` tasks at a time), on a private redis-server; Deno KV with
 * its embedded listener, in this process, on a database file.
 *
 * And how fast Deno KV stores chains: the backend's group commit against one
 * commit per chain (the same operations), in alternating rounds.
 *
 *   deno task bench:workers
 *   deno run -A --unstable-kv bench/worker_throughput.ts --tasks 5000 --concurrency 8
 *
 * @module
 */

import { parseArgs } from "node:util";
import { connectable, freePort } from "./_harness.ts";
import { Queue } from "npm:bullmq@^6";
import { defineTask } from "../mod.ts";
import { bullmqBackend } from "../bullmq.ts";
import { shardPrefixes } from "../src/bullmq/_shared.ts";
import { kvBackend } from "../kv.ts";
import { uuidV7 } from "../src/util/_uuid_v7.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    tasks: { type: "string", default: "5000" },
    concurrency: { type: "string", default: "8" },
  },
});
const total = Number(values.tasks);
const concurrency = values.concurrency!;

/** The trivial task; the workers define the same one, by name. */
export const trivial = defineTask((_context, _n: number) => {}, {
  name: "trivial",
});

/** A chain as the wrapper hands it over, with an id made as it makes them. */
function chain(index: number) {
  return {
    id: uuidV7(),
    tasks: [{
      name: trivial.name,
      args: [index],
      timeout: undefined,
      retry: undefined,
      task: trivial as never,
    }],
    request: undefined,
    delivered: undefined,
  };
}

type Handed = ReturnType<typeof chain>;

async function bullmq(workers: number, port: number): Promise<number> {
  const connection = { host: "127.0.0.1", port };
  const queueName = `throughput-${crypto.randomUUID()}`;
  const backend = bullmqBackend({
    connection,
    queue: queueName,
    tasks: [trivial],
  });
  for (let i = 0; i < total; i += 100) {
    await Promise.all(
      Array.from(
        { length: Math.min(100, total - i) },
        (_, j) => backend.enqueue(chain(i + j)),
      ),
    );
  }
  await backend.close();
  const children = Array.from(
    { length: workers },
    () =>
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("./throughput_worker.ts", import.meta.url).pathname,
        ],
        env: {
          REDIS_PORT: String(port),
          QUEUE: queueName,
          CONCURRENCY: concurrency,
        },
        stdout: "piped",
        stderr: "inherit",
      }).spawn(),
  );
  // Ready once each has printed its first line.
  const readers = children.map((child) =>
    child.stdout.pipeThrough(new TextDecoderStream()).getReader()
  );
  await Promise.all(readers.map((reader) => reader.read()));
  const startedAt = performance.now();
  const queue = new Queue(queueName, {
    connection,
    prefix: shardPrefixes("bull", 1)[0]!,
  });
  for (;;) {
    const counts = await queue.getJobCounts("wait", "active", "delayed");
    const left = (counts["wait"] ?? 0) + (counts["active"] ?? 0) +
      (counts["delayed"] ?? 0);
    if (left === 0) break;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  const seconds = (performance.now() - startedAt) / 1000;
  await queue.obliterate({ force: true });
  await queue.close();
  for (const child of children) child.kill("SIGTERM");
  await Promise.all(children.map((child) => child.status));
  await Promise.all(readers.map((reader) => reader.cancel()));
  return total / seconds;
}

async function kv(): Promise<number> {
  const path = await Deno.makeTempFile({ suffix: ".sqlite3" });
  try {
    const db = await Deno.openKv(path);
    const enqueuer = kvBackend({ kv: db, tasks: [trivial], listen: false });
    for (let i = 0; i < total; i += 100) {
      await Promise.all(
        Array.from(
          { length: Math.min(100, total - i) },
          (_, j) => enqueuer.enqueue(chain(i + j)),
        ),
      );
    }
    db.close();
    const done = Promise.withResolvers<void>();
    let ran = 0;
    const reopened = await Deno.openKv(path);
    const startedAt = performance.now();
    const backend = kvBackend({
      kv: reopened,
      tasks: [trivial],
      onTaskEnd: () => {
        if (++ran === total) done.resolve();
      },
    });
    await done.promise;
    const seconds = (performance.now() - startedAt) / 1000;
    await backend.close();
    reopened.close();
    return total / seconds;
  } finally {
    await Deno.remove(path);
  }
}

/** Chains per second `enqueue` stores, given `total` chains at once. */
async function kvEnqueue(
  enqueue: (db: Deno.Kv) => (handed: Handed) => Promise<unknown>,
): Promise<number> {
  const path = await Deno.makeTempFile({ suffix: ".sqlite3" });
  try {
    const db = await Deno.openKv(path);
    const store = enqueue(db);
    const startedAt = performance.now();
    await Promise.all(Array.from({ length: total }, (_, i) => store(chain(i))));
    const seconds = (performance.now() - startedAt) / 1000;
    db.close();
    return total / seconds;
  } finally {
    await Deno.remove(path);
  }
}

/** The backend, which groups the chains handed over together. */
const grouped = (db: Deno.Kv) =>
  kvBackend({ kv: db, tasks: [trivial], listen: false }).enqueue;

/** What the backend commits for a chain, one commit per chain. */
const perChain = (db: Deno.Kv) => async (handed: Handed) => {
  const key = ["background-tasks", "chains", handed.id];
  const result = await db.atomic()
    .check({ key, versionstamp: null })
    .set(key, { index: 0, attempt: 1 })
    .enqueue({
      afterwardStep: 1,
      chain: handed.id,
      index: 0,
      attempt: 1,
      tasks: handed.tasks.map(({ name, args }) => ({ name, args })),
    }, {
      keysIfUndelivered: [[
        "background-tasks",
        "undelivered",
        Math.floor(Math.random() * 2 ** 53),
      ]],
      backoffSchedule: [1000, 5000, 10_000, 30_000, 60_000],
    })
    .commit();
  if (!result.ok) throw new Error("already queued");
};

function median(values: number[]): number {
  const sorted = values.toSorted((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

if (import.meta.main) {
  const port = freePort();
  const redis = new Deno.Command("redis-server", {
    args: ["--port", String(port), "--bind", "127.0.0.1", "--save", ""],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await connectable(port);
    const groupedRounds: number[] = [];
    const perChainRounds: number[] = [];
    for (let round = 0; round < 3; round++) {
      groupedRounds.push(await kvEnqueue(grouped));
      perChainRounds.push(await kvEnqueue(perChain));
    }
    const results = {
      tasks: total,
      concurrency: Number(concurrency),
      bullmqOneWorker: Math.round(await bullmq(1, port)),
      bullmqTwoWorkers: Math.round(await bullmq(2, port)),
      kvEmbedded: Math.round(await kv()),
      kvEnqueueGrouped: Math.round(median(groupedRounds)),
      kvEnqueuePerChain: Math.round(median(perChainRounds)),
    };
    console.log(JSON.stringify(results));
    console.log(`| Backend | tasks/s |
| --- | ---: |
| BullMQ, 1 worker (concurrency ${concurrency}) | ${results.bullmqOneWorker} |
| BullMQ, 2 workers (concurrency ${concurrency} each) | ${results.bullmqTwoWorkers} |
| Deno KV, embedded listener | ${results.kvEmbedded} |

| Deno KV, storing chains (median of 3 rounds) | chains/s |
| --- | ---: |
| the backend: up to 100 chains per commit | ${results.kvEnqueueGrouped} |
| one commit per chain | ${results.kvEnqueuePerChain} |
| ratio | ${
      (results.kvEnqueueGrouped / results.kvEnqueuePerChain).toFixed(2)
    }× |`);
  } finally {
    redis.kill("SIGKILL");
    await redis.status;
  }
}

// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * What storing a chain costs this process, and Redis, for each way BullMQ
 * can store it: `FlowProducer.addBulk` of N flows (what the backend does),
 * `Queue.addBulk` of N jobs, `Job.addJob` of N jobs into one MULTI of our
 * own, N awaited `queue.add()` calls, and the backend itself (`enqueue()` of
 * N chains at once, which its group commit stores in one pipeline of plain
 * jobs when they have one task, in one transaction of flows otherwise). The
 * ways that add plain jobs store one-task chains whatever `--tasks` says.
 * For each, at each N of `--sizes`, it prints the CPU time of this process
 * per chain (user + system, all threads, from `process.cpuUsage()`), the
 * wall time per chain, Redis's CPU time per chain (`INFO cpu`) and its
 * commands per chain (`INFO commandstats`; the commands a script runs count
 * too), before and after. It starts a private redis-server on a free port.
 * The machine's noise shows between runs: compare ways within one run.
 *
 *   deno task bench:store --sizes 1,16,64 --only "FlowProducer.addBulk;Queue.addBulk"
 *   deno run --allow-run=redis-server --allow-net=127.0.0.1 --allow-env --allow-read --allow-sys bench/bullmq_store.ts [--chains 20000] [--tasks 1]
 *
 * @module
 */

import { parseArgs } from "node:util";
import process from "node:process";
import { type FlowJob, FlowProducer, Job, Queue } from "npm:bullmq@^6";
import { connectable, freePort } from "./_harness.ts";
import { bullmqBackend } from "../bullmq.ts";
import { defineTask } from "../mod.ts";
import type { BackendChain } from "../backend.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    chains: { type: "string", default: "20000" },
    tasks: { type: "string", default: "1" },
    only: { type: "string" },
    sizes: { type: "string" },
  },
});
const total = Number(values.chains);
const taskCount = Number(values.tasks);

const port = freePort();
const redis = new Deno.Command("redis-server", {
  args: [
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    "--appendonly",
    "no",
  ],
  stdout: "null",
  stderr: "null",
}).spawn();
await connectable(port);
const connection = { host: "127.0.0.1", port };

const trivial = defineTask((_context, ..._args: unknown[]) => {}, {
  name: "trivial",
});
const request = { method: "GET", url: "http://127.0.0.1:8000/" };
let serial = 0;

function data(chain: string, index: number) {
  return { chain, index, args: [1], request };
}
function opts(chain: string, index: number) {
  return {
    jobId: `${chain}.${index}`,
    attempts: 1,
    backoff: { type: "background-tasks" },
    removeOnComplete: true,
    removeOnFail: false,
    ignoreDependencyOnFailure: true,
  };
}
function flow(queueName: string): FlowJob {
  const chain = `c${serial++}`;
  let node: FlowJob | undefined;
  for (let index = 0; index < taskCount; index++) {
    node = {
      name: "trivial",
      queueName,
      data: data(chain, index),
      opts: opts(chain, index),
      ...(node === undefined ? {} : { children: [node] }),
    };
  }
  return node!;
}

/** A way to store `n` chains, made ready for a queue of its own. */
type Way = (
  queueName: string,
) => Promise<{ store: (n: number) => Promise<void>; close(): Promise<void> }>;

const ways: Record<string, Way> = {
  "FlowProducer.addBulk": (queueName) => {
    const flows = new FlowProducer({ connection });
    return Promise.resolve({
      async store(n) {
        const batch = Array.from({ length: n }, () => flow(queueName));
        await flows.addBulk(batch);
      },
      close: () => flows.close(),
    });
  },
  "Queue.addBulk": (queueName) => {
    const queue = new Queue(queueName, { connection });
    return Promise.resolve({
      async store(n) {
        const batch = Array.from({ length: n }, () => {
          const chain = `c${serial++}`;
          return {
            name: "trivial",
            data: data(chain, 0),
            opts: opts(chain, 0),
          };
        });
        await queue.addBulk(batch);
      },
      close: () => queue.close(),
    });
  },
  "Job.addJob in one MULTI": (queueName) => {
    const queue = new Queue(queueName, { connection });
    return Promise.resolve({
      async store(n) {
        const client = await queue.backend.client;
        const multi = client.multi();
        for (let i = 0; i < n; i++) {
          const chain = `c${serial++}`;
          const job = new Job(
            queue,
            "trivial",
            data(chain, 0),
            opts(chain, 0),
            `${chain}.0`,
          );
          void job.addJob(multi as never).catch(() => {});
        }
        const results = await multi.exec();
        for (const [error] of results ?? []) if (error) throw error;
      },
      close: () => queue.close(),
    });
  },
  "awaited queue.add()": (queueName) => {
    const queue = new Queue(queueName, { connection });
    return Promise.resolve({
      async store(n) {
        for (let i = 0; i < n; i++) {
          const chain = `c${serial++}`;
          await queue.add("trivial", data(chain, 0), opts(chain, 0));
        }
      },
      close: () => queue.close(),
    });
  },
  "backend enqueue()": (queueName) => {
    const backend = bullmqBackend({
      connection,
      queue: queueName,
      tasks: [trivial],
      onStatusChange: () => {},
    });
    const tasks = Array.from({ length: taskCount }, () => ({
      name: "trivial",
      args: [1],
      timeout: undefined,
      retry: undefined,
      task: trivial,
    }));
    return Promise.resolve({
      async store(n) {
        const chains: BackendChain[] = Array.from({ length: n }, () => ({
          id: `c${serial++}`,
          tasks,
          request,
          delivered: undefined,
        }));
        await Promise.all(chains.map((chain) => backend.enqueue(chain)));
      },
      close: () => backend.close(),
    });
  },
};

async function commandStats(): Promise<Map<string, number>> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(new TextEncoder().encode("INFO everything\r\n"));
    let text = "";
    const decoder = new TextDecoder();
    for await (const chunk of conn.readable) {
      text += decoder.decode(chunk, { stream: true });
      const header = /^\$(\d+)\r\n/.exec(text);
      if (header && text.length >= header[0].length + Number(header[1])) break;
    }
    const stats = new Map<string, number>();
    for (const match of text.matchAll(/cmdstat_([^:]+):calls=(\d+)/g)) {
      stats.set(match[1]!, Number(match[2]));
    }
    for (const match of text.matchAll(/used_cpu_(user|sys):([\d.]+)/g)) {
      stats.set("cpu", (stats.get("cpu") ?? 0) + Number(match[2]) * 1e6);
    }
    return stats;
  } finally {
    try {
      conn.close();
    } catch {
      // Closed by the readable's end.
    }
  }
}

function cpuMicros(): number {
  const { user, system } = process.cpuUsage();
  return user + system;
}

const results: string[] = [];
for (const [name, way] of Object.entries(ways)) {
  if (values.only !== undefined && !values.only.split(";").includes(name)) {
    continue;
  }
  for (const n of (values.sizes ?? "1,16,64").split(",").map(Number)) {
    const { store, close } = await way(`bench-${crypto.randomUUID()}`);
    // Warm up: connections, scripts, the JIT.
    for (let i = 0; i < Math.max(20, 2000 / n); i++) await store(n);
    const rounds = Math.max(1, Math.round(total / n));
    const before = await commandStats();
    const cpuBefore = cpuMicros();
    const startedAt = performance.now();
    for (let i = 0; i < rounds; i++) await store(n);
    const wall = performance.now() - startedAt;
    const cpu = cpuMicros() - cpuBefore;
    const after = await commandStats();
    const chains = rounds * n;
    const commands = [...after].map(([command, calls]) =>
      [command, calls - (before.get(command) ?? 0)] as const
    ).filter(([command, calls]) =>
      calls > 0 && command !== "info" && command !== "cpu"
    );
    const redisCpu = after.get("cpu")! - before.get("cpu")!;
    const perChain = commands.map(([command, calls]) =>
      `${command} ${(calls / chains).toFixed(2)}`
    ).join(", ");
    results.push(
      `| ${name} | ${n} | ${(cpu / chains).toFixed(1)} | ${
        (wall * 1000 / chains).toFixed(1)
      } | ${(redisCpu / chains).toFixed(1)} | ${perChain} |`,
    );
    console.error(results.at(-1));
    await close();
  }
}
console.log(
  `\n${taskCount}-task chains, ${total} per measurement\n\n| Way | N | CPU µs/chain | wall µs/chain | Redis CPU µs/chain | Redis commands/chain |\n| --- | ---: | ---: | ---: | ---: | --- |`,
);
console.log(results.join("\n"));
redis.kill("SIGKILL");
await redis.status;

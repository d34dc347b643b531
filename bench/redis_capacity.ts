// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * The BullMQ backend's capacity model, counted in Redis itself: the commands
 * and the Redis main-thread CPU time that storing a chain and running a task
 * cost, from `INFO commandstats` and `INFO cpu` before and after (after
 * `CONFIG RESETSTAT`), on a private redis-server.
 *
 * Storing is measured two ways: chains handed over together, as a flood
 * gives them (one transaction for many), and one at a time, each awaited
 * (the worst case, one transaction per chain). Running is measured with one
 * worker (concurrency 8) on the chains stored.
 *
 * A Redis node runs commands on one thread, so the chains per second it can
 * take is about 1 s divided by the main-thread CPU a chain costs in all
 * (stored, then run): the model the durable guide states. For comparison,
 * `redis-benchmark` measures the node's rate of plain SETs (50 clients, no
 * pipelining), and the bench divides it by the commands a chain costs.
 *
 *   deno task bench:redis
 *   deno run -A bench/redis_capacity.ts --chains 2000
 *
 * @module
 */

import { parseArgs } from "node:util";
import { freePort } from "./_harness.ts";
import { Redis } from "npm:ioredis@^5";
import { defineTask, withBackgroundTasks } from "../mod.ts";
import { bullmqBackend, bullmqWorker } from "../bullmq.ts";
import { callHandler } from "../testing.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    chains: { type: "string", default: "2000" },
    out: { type: "string", default: "bench/results/redis_capacity.json" },
  },
});
const chains = Number(values.chains);

const port = freePort();
const server = new Deno.Command("redis-server", {
  args: ["--port", String(port), "--bind", "127.0.0.1", "--save", ""],
  stdout: "null",
  stderr: "null",
}).spawn();
const connection = { host: "127.0.0.1", port };
const admin = new Redis({ ...connection, maxRetriesPerRequest: null });
await admin.ping();

interface Usage {
  /** Commands by name. */
  commands: Record<string, number>;
  /** Commands in all. */
  calls: number;
  /** Microseconds of Redis main-thread CPU (user and system). */
  cpuMicros: number;
}

async function usage(): Promise<Usage> {
  const stats = await admin.info("commandstats");
  const cpu = await admin.info("cpu");
  const commands: Record<string, number> = {};
  let calls = 0;
  for (const match of stats.matchAll(/cmdstat_([\w|]+):calls=(\d+)/g)) {
    if (match[1] === "info" || match[1] === "config|resetstat") continue;
    commands[match[1]!] = Number(match[2]);
    calls += Number(match[2]);
  }
  const seconds = (name: string) =>
    Number(cpu.match(new RegExp(`${name}:([\\d.]+)`))?.[1] ?? NaN);
  const cpuMicros = (seconds("used_cpu_user_main_thread") +
    seconds("used_cpu_sys_main_thread")) * 1e6;
  return { commands, calls, cpuMicros };
}

/** What `work` costs Redis, from a reset of its statistics. */
async function measure(work: () => Promise<void>): Promise<Usage> {
  await admin.config("RESETSTAT");
  const before = await usage();
  await work();
  const after = await usage();
  return {
    commands: after.commands,
    calls: after.calls,
    cpuMicros: after.cpuMicros - before.cpuMicros,
  };
}

interface Row {
  case: string;
  tasksPerChain: number;
  storeCommandsPerChain: number;
  storeCpuMicrosPerChain: number;
  runCommandsPerTask: number;
  runCpuMicrosPerTask: number;
  chainsPerSecondPerNode: number;
  /** The node's SETs/s over the commands a chain costs. */
  chainsPerSecondBySets: number;
  storeCommands: Record<string, number>;
  runCommands: Record<string, number>;
}

async function run(length: number, together: boolean): Promise<Row> {
  const queue = `capacity-${crypto.randomUUID()}`;
  // The chains measured, and one to warm up the connections.
  const tasks = (chains + 1) * length;
  let ran = 0;
  const allRan = Promise.withResolvers<void>();
  const step = defineTask((_context, _index: number) => {
    if (++ran === tasks) allRan.resolve();
  }, { name: "step" });
  const backend = bullmqBackend({ connection, queue, tasks: [step] });
  const handler = withBackgroundTasks((_request, _info, tasks) => {
    for (let index = 0; index < length; index++) tasks.addTask(step, index);
    return new Response("ok");
  }, { backend });
  // Connections are made before the count starts.
  await (await callHandler(handler, "/warmup")).tasks;
  const stored = await measure(async () => {
    if (together) {
      const calls = [];
      for (let i = 0; i < chains; i++) calls.push(callHandler(handler, "/"));
      await Promise.all((await Promise.all(calls)).map((call) => call.tasks));
    } else {
      for (let i = 0; i < chains; i++) {
        await (await callHandler(handler, "/")).tasks;
      }
    }
  });
  await backend.close();
  const ranUsage = await measure(async () => {
    const worker = bullmqWorker({
      connection: { ...connection, maxRetriesPerRequest: null },
      queue,
      tasks: [step],
      concurrency: 8,
    });
    await allRan.promise;
    await worker.close();
  });
  const storeCpu = stored.cpuMicros / chains;
  const runCpu = ranUsage.cpuMicros / tasks;
  return {
    case: `${length} task${length === 1 ? "" : "s"} per chain, ${
      together ? "handed over together" : "one chain at a time"
    }`,
    tasksPerChain: length,
    storeCommandsPerChain: stored.calls / chains,
    storeCpuMicrosPerChain: storeCpu,
    runCommandsPerTask: ranUsage.calls / tasks,
    runCpuMicrosPerTask: runCpu,
    chainsPerSecondPerNode: 1e6 / (storeCpu + length * runCpu),
    chainsPerSecondBySets: NaN,
    storeCommands: stored.commands,
    runCommands: ranUsage.commands,
  };
}

/** The node's plain SET rate, as `redis-benchmark` measures it. */
async function nodeOpsPerSecond(): Promise<number> {
  const { stdout } = await new Deno.Command("redis-benchmark", {
    args: [
      "-p",
      String(port),
      "-t",
      "set",
      "-n",
      "200000",
      "-c",
      "50",
      "--csv",
    ],
    stdout: "piped",
    stderr: "null",
  }).output();
  const line = new TextDecoder().decode(stdout).split("\n")
    .find((text) => text.startsWith('"SET"'));
  return Number(line?.split(",")[1]?.replaceAll('"', ""));
}

const rows: Row[] = [];
let opsPerSecond = NaN;
try {
  opsPerSecond = await nodeOpsPerSecond();
  console.log(`redis-benchmark: ${Math.round(opsPerSecond)} SETs/s`);
  for (const length of [1, 3]) {
    for (const together of [true, false]) {
      const row = await run(length, together);
      row.chainsPerSecondBySets = opsPerSecond /
        (row.storeCommandsPerChain + length * row.runCommandsPerTask);
      rows.push(row);
      console.log(
        `${row.case}: store ${row.storeCommandsPerChain.toFixed(1)} commands, ${
          row.storeCpuMicrosPerChain.toFixed(0)
        } µs of Redis CPU per chain; run ${
          row.runCommandsPerTask.toFixed(1)
        } commands, ${row.runCpuMicrosPerTask.toFixed(0)} µs per task; ${
          Math.round(row.chainsPerSecondPerNode)
        } chains/s per node by CPU, ${
          Math.round(row.chainsPerSecondBySets)
        } by SETs/s over commands`,
      );
    }
  }
} finally {
  admin.disconnect();
  server.kill("SIGTERM");
  await server.status;
}
const out = {
  date: new Date().toISOString(),
  deno: Deno.version.deno,
  chains,
  nodeSetsPerSecond: opsPerSecond,
  rows,
};
await Deno.writeTextFile(values.out!, JSON.stringify(out, null, 2) + "\n");
console.log(`Wrote ${values.out}`);

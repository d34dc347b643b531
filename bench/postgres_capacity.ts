// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * The BullMQ backend's capacity on PostgreSQL, counted in PostgreSQL itself,
 * as bench/redis_capacity.ts counts it in Redis: what storing a chain and
 * running a task cost the server, on a private PostgreSQL with its default
 * durability (fsync and synchronous_commit on, as an application's server
 * has them):
 *
 * - commits (`pg_stat_database.xact_commit`) and WAL bytes
 *   (`pg_current_wal_lsn()`), per chain stored and per task run;
 * - the server's CPU time (its processes' user and system time, from
 *   /proc, the exited ones' included), per chain and per task;
 * - the wall-clock rates here: chains stored per second, and tasks one
 *   worker (concurrency 8) runs per second.
 *
 * Storing is measured two ways, as for Redis: chains handed over together,
 * as a flood gives them (one statement for many), and one at a time, each
 * awaited. PostgreSQL runs each connection's statements on a process of its
 * own, so unlike Redis it spreads over the cores: "chains/s per core" is 1 s
 * over the server CPU time a chain costs (stored, then run), the bound one
 * core of PostgreSQL puts on a deployment; the commits per chain, each a
 * WAL flush, bound it on a slow disk instead.
 *
 *   deno task bench:postgres
 *   deno run --lock=deno.lock -A bench/postgres_capacity.ts --chains 2000
 *
 * (-A: Deno reads /proc only with every permission.)
 *
 * @module
 */

import { parseArgs } from "node:util";
import pg from "npm:pg@^8";
import { defineTask, withBackgroundTasks } from "../mod.ts";
import { bullmqBackend, bullmqWorker } from "../bullmq.ts";
import { callHandler } from "../testing.ts";
import { startPostgres } from "../tests/_helpers/postgres.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    chains: { type: "string", default: "2000" },
    out: { type: "string", default: "bench/results/postgres_capacity.json" },
  },
});
const chains = Number(values.chains);

await using server = await startPostgres({ durable: true });
const admin = new pg.Client({ connectionString: server.url });
await admin.connect();
const ticksPerSecond = Number(
  new TextDecoder().decode(
    (await new Deno.Command("getconf", { args: ["CLK_TCK"] }).output())
      .stdout,
  ).trim(),
) || 100;

/** Microseconds of CPU the server's processes have used, exited ones too. */
async function serverCpuMicros(): Promise<number> {
  const postmaster = Number(
    (await Deno.readTextFile(`${server.dir}/data/postmaster.pid`))
      .split("\n")[0],
  );
  let ticks = 0;
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    let stat: string;
    try {
      stat = await Deno.readTextFile(`/proc/${entry.name}/stat`);
    } catch {
      continue;
    }
    // The fields after the command's name, which may hold spaces.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const pid = Number(entry.name);
    const parent = Number(fields[1]);
    if (pid !== postmaster && parent !== postmaster) continue;
    // utime and stime; for the postmaster, its reaped children's too.
    ticks += Number(fields[11]) + Number(fields[12]);
    if (pid === postmaster) ticks += Number(fields[13]) + Number(fields[14]);
  }
  return ticks / ticksPerSecond * 1e6;
}

interface Usage {
  commits: number;
  walBytes: number;
  cpuMicros: number;
  ms: number;
}

async function counters(): Promise<Omit<Usage, "ms">> {
  const { rows } = await admin.query<{ commits: string; wal: string }>(
    `SELECT xact_commit AS commits,
            pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') AS wal
       FROM pg_stat_database WHERE datname = current_database()`,
  );
  return {
    commits: Number(rows[0]!.commits),
    walBytes: Number(rows[0]!.wal),
    cpuMicros: await serverCpuMicros(),
  };
}

/**
 * What `work` costs PostgreSQL, and how long it takes until `done` (the
 * rest of `work` closes its connections). A server process writes its
 * counts to pg_stat_database at most once a second while busy, ten seconds
 * after it turns idle, and when it exits: `work` closes its connections, so
 * that every count is written before the second reading (a pause lets the
 * last processes exit; the two readings add two commits of their own to
 * the thousands measured).
 */
async function measure(
  work: (done: () => void) => Promise<void>,
): Promise<Usage> {
  const before = await counters();
  const started = performance.now();
  let ms = NaN;
  await work(() => ms = performance.now() - started);
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  const after = await counters();
  return {
    commits: after.commits - before.commits,
    walBytes: after.walBytes - before.walBytes,
    cpuMicros: after.cpuMicros - before.cpuMicros,
    ms,
  };
}

interface Row {
  case: string;
  tasksPerChain: number;
  storeCommitsPerChain: number;
  storeWalBytesPerChain: number;
  storeCpuMicrosPerChain: number;
  storedChainsPerSecond: number;
  runCommitsPerTask: number;
  runWalBytesPerTask: number;
  runCpuMicrosPerTask: number;
  /** One worker, concurrency 8. */
  tasksPerSecondOneWorker: number;
  /** 1 s over the server CPU of storing a chain and running its tasks. */
  chainsPerSecondPerCore: number;
}

async function run(length: number, together: boolean): Promise<Row> {
  const queue = `capacity-${crypto.randomUUID()}`;
  // The chains measured, and one to warm up the connections.
  const tasks = (chains + 1) * length;
  let ran = 0;
  /** When the worker ran its first task: its rate excludes its start. */
  let firstRun = NaN;
  const allRan = Promise.withResolvers<void>();
  const step = defineTask((_context, _index: number) => {
    if (ran === 0) firstRun = performance.now();
    if (++ran === tasks) allRan.resolve();
  }, { name: "step" });
  const backend = bullmqBackend({
    connection: server.url,
    queue,
    tasks: [step],
  });
  const handler = withBackgroundTasks((_request, _info, tasks) => {
    for (let index = 0; index < length; index++) tasks.addTask(step, index);
    return new Response("ok");
  }, { backend });
  // Connections, and BullMQ's schema, are made before the count starts.
  await (await callHandler(handler, "/warmup")).tasks;
  const stored = await measure(async (done) => {
    if (together) {
      const calls = [];
      for (let i = 0; i < chains; i++) calls.push(callHandler(handler, "/"));
      await Promise.all((await Promise.all(calls)).map((call) => call.tasks));
    } else {
      for (let i = 0; i < chains; i++) {
        await (await callHandler(handler, "/")).tasks;
      }
    }
    done();
    await backend.close();
  });
  let lastRun = NaN;
  const ranUsage = await measure(async (done) => {
    const worker = bullmqWorker({
      connection: server.url,
      queue,
      tasks: [step],
      concurrency: 8,
    });
    await allRan.promise;
    lastRun = performance.now();
    done();
    await worker.close();
  });
  const storeCpu = stored.cpuMicros / chains;
  const runCpu = ranUsage.cpuMicros / tasks;
  return {
    case: `${length} task${length === 1 ? "" : "s"} per chain, ${
      together ? "handed over together" : "one chain at a time"
    }`,
    tasksPerChain: length,
    storeCommitsPerChain: stored.commits / chains,
    storeWalBytesPerChain: stored.walBytes / chains,
    storeCpuMicrosPerChain: storeCpu,
    storedChainsPerSecond: chains / (stored.ms / 1000),
    runCommitsPerTask: ranUsage.commits / tasks,
    runWalBytesPerTask: ranUsage.walBytes / tasks,
    runCpuMicrosPerTask: runCpu,
    tasksPerSecondOneWorker: (tasks - 1) / ((lastRun - firstRun) / 1000),
    chainsPerSecondPerCore: 1e6 / (storeCpu + length * runCpu),
  };
}

const rows: Row[] = [];
try {
  for (const length of [1, 3]) {
    for (const together of [true, false]) {
      const row = await run(length, together);
      rows.push(row);
      console.log(
        `${row.case}: store ${row.storeCommitsPerChain.toFixed(2)} commits, ${
          Math.round(row.storeWalBytesPerChain)
        } WAL bytes, ${
          row.storeCpuMicrosPerChain.toFixed(0)
        } µs of PostgreSQL CPU per chain (${
          Math.round(row.storedChainsPerSecond)
        } chains/s here); run ${row.runCommitsPerTask.toFixed(2)} commits, ${
          Math.round(row.runWalBytesPerTask)
        } WAL bytes, ${
          row.runCpuMicrosPerTask.toFixed(0)
        } µs per task (one worker: ${
          Math.round(row.tasksPerSecondOneWorker)
        } tasks/s); ${
          Math.round(row.chainsPerSecondPerCore)
        } chains/s per PostgreSQL core by CPU`,
      );
    }
  }
} finally {
  await admin.end();
}
const out = {
  date: new Date().toISOString(),
  deno: Deno.version.deno,
  postgres: (await (async () => {
    const client = new pg.Client({ connectionString: server.url });
    await client.connect();
    try {
      return (await client.query("SHOW server_version")).rows[0]
        ?.server_version;
    } finally {
      await client.end();
    }
  })()) as string,
  chains,
  rows,
};
await Deno.writeTextFile(values.out!, JSON.stringify(out, null, 2) + "\n");
console.log(`Wrote ${values.out}`);

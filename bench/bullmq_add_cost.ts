// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * What each part of the BullMQ backend's job costs Redis: µs of Redis's
 * main-thread CPU per stored chain (`INFO cpu`, before and after), with
 * `EVALSHA`'s time as `INFO commandstats` counts it after `CONFIG RESETSTAT`
 * in brackets (wall time, its script's commands included; not the sum over
 * commands, which counts a script's commands twice, on their own and in
 * its time), and bytes received per chain, on a private redis-server; 32
 * adds in flight, as 32 clients give. From an
 * awaited `queue.add()` of the shared `durable_server.ts` up to the job the
 * backend stores for a chain of one task, one option at a time, then the
 * backend itself (its deduplication keys deleted once answered), and what
 * a user writes for the backend's guarantee (a store sent again after a
 * lost answer adds nothing): a job id of the request's own, BullMQ's
 * deduplication by it, its key deleted once answered.
 *
 *   deno run -A bench/bullmq_add_cost.ts --chains 20000 --rounds 3
 *
 * Each round measures every variant in turn; each line gives the rounds'
 * figures, as Redis's CPU per command moves from round to round.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { connectable, freePort } from "./_harness.ts";
import { Redis } from "npm:ioredis@^5";
import { Queue } from "npm:bullmq@^6";
import { defineTask, withBackgroundTasks } from "../mod.ts";
import { bullmqBackend } from "../bullmq.ts";
import { fakeServeHandlerInfo } from "../testing.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    chains: { type: "string", default: "20000" },
    rounds: { type: "string", default: "3" },
  },
});
const chains = Number(values.chains);
const rounds = Number(values.rounds);
const inFlight = 32;
const DAY = 86_400_000;

const port = freePort();
const server = new Deno.Command("redis-server", {
  args: ["--port", String(port), "--bind", "127.0.0.1", "--save", ""],
  stdout: "null",
  stderr: "null",
}).spawn();
// ioredis would print each refused connection while the server starts.
await connectable(port);
const connection = { host: "127.0.0.1", port };
const admin = new Redis({ ...connection, maxRetriesPerRequest: null });
await admin.ping();

/** Runs `add` `n` times, `inFlight` at once. */
async function flood(n: number, add: () => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next++ < n) await add();
    }),
  );
}

/** µs of Redis's main-thread CPU (user and system) so far. */
async function cpuMicros(): Promise<number> {
  const cpu = await admin.info("cpu");
  const seconds = (name: string) =>
    Number(new RegExp(`${name}:([\\d.]+)`).exec(cpu)![1]);
  return (seconds("used_cpu_user_main_thread") +
    seconds("used_cpu_sys_main_thread")) * 1e6;
}

/** µs of Redis CPU and bytes received per chain while `add` runs. */
async function measure(add: () => Promise<unknown>): Promise<string> {
  await flood(1_000, add); // warm-up: scripts loaded, code compiled
  await admin.config("RESETSTAT");
  const before = await cpuMicros();
  await flood(chains, add);
  const micros = await cpuMicros() - before;
  const stats = await admin.info("commandstats");
  const evalsha = Number(/cmdstat_evalsha:.*?usec=(\d+)/.exec(stats)?.[1] ?? 0);
  const bytes = Number(
    /total_net_input_bytes:(\d+)/.exec(await admin.info("stats"))![1],
  );
  return `${(micros / chains).toFixed(1)} (${(evalsha / chains).toFixed(1)}) ${
    (bytes / chains).toFixed(0)
  } B`;
}

const url = "http://127.0.0.1:8000/orders/1";
/** The data the backend stores for a chain of one task. */
const data = (id: string) => ({
  chain: id,
  index: 0,
  args: [1],
  request: { method: "GET", url },
});
/** The options the backend gives that job (see chainFlow()). */
const options = (id: string) => ({
  jobId: `${id}.0`,
  attempts: 1,
  backoff: { type: "background-tasks" },
  removeOnFail: false,
  removeOnComplete: true,
  ignoreDependencyOnFailure: true,
  deduplication: { id, ttl: DAY },
});

const queues: Queue[] = [];
function queue(): Queue {
  const made = new Queue(`cost-${crypto.randomUUID()}`, { connection });
  queues.push(made);
  return made;
}

const variants: [string, () => () => Promise<unknown>][] = [
  ["queue.add(), as durable_server.ts", () => {
    const q = queue();
    return () => q.add("trivial", { n: 1 });
  }],
  ["with a job id", () => {
    const q = queue();
    return () => q.add("trivial", { n: 1 }, { jobId: crypto.randomUUID() });
  }],
  ["with a job id and deduplication", () => {
    const q = queue();
    return () => {
      const id = crypto.randomUUID();
      return q.add("trivial", { n: 1 }, {
        jobId: id,
        deduplication: { id, ttl: DAY },
      });
    };
  }],
  ["the backend's options", () => {
    const q = queue();
    return () => {
      const id = crypto.randomUUID();
      return q.add("trivial", { n: 1 }, options(id));
    };
  }],
  ["the backend's options and data", () => {
    const q = queue();
    return () => {
      const id = crypto.randomUUID();
      return q.add("trivial", data(id), options(id));
    };
  }],
  ["the backend's data, no deduplication", () => {
    const q = queue();
    return () => {
      const id = crypto.randomUUID();
      return q.add("trivial", data(id), {
        jobId: `${id}.0`,
        removeOnComplete: true,
      });
    };
  }],
  ["stored once, as a user writes it", () => {
    const q = queue();
    return async () => {
      const id = crypto.randomUUID();
      await q.add("trivial", { n: 1 }, {
        jobId: id,
        removeOnComplete: true,
        deduplication: { id, ttl: DAY },
      });
      q.removeDeduplicationKey(id).catch(() => {});
    };
  }],
  ["the backend", () => {
    const trivial = defineTask((_context, _n: number) => {}, {
      name: "trivial",
    });
    const backend = bullmqBackend({
      connection,
      queue: `cost-${crypto.randomUUID()}`,
      tasks: [trivial],
    });
    closing.push(() => backend.close());
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(trivial, 1);
      return new Response("ok");
    }, { backend });
    const info = fakeServeHandlerInfo();
    info.complete();
    // Resolves once its chain is stored, as the response waits for it.
    return async () => await handler(new Request(url), info);
  }],
];
const closing: (() => Promise<unknown>)[] = [];

console.log(
  `Redis main-thread CPU per stored chain (µs; EVALSHA's part in brackets) and bytes received, ${chains} chains, ${inFlight} in flight, ${rounds} rounds:`,
);
const figures = variants.map(() => [] as string[]);
try {
  const adds = variants.map(([, make]) => make());
  for (let round = 0; round < rounds; round++) {
    for (const [i, add] of adds.entries()) figures[i]!.push(await measure(add));
  }
  for (const [i, [name]] of variants.entries()) {
    console.log(`${name}: ${figures[i]!.join(" | ")}`);
  }
} finally {
  await Promise.all(closing.map((close) => close()));
  await Promise.all(queues.map((q) => q.close()));
  admin.disconnect();
  server.kill();
  await server.status;
}

// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// A Redis outage in the middle of a flood: the web server goes on answering
// (202 once a chain is stored, 503 once `maxPending` is reached), says once
// that Redis is gone and once that it is back, and every task it accepted
// runs, in order, exactly once, when Redis returns. And a worker facing a
// Redis that refuses its writes (a read-only replica, memory full) pauses
// rather than spins, and runs the waiting chains once writes come back.

import assert from "node:assert/strict";
import { mock } from "node:test";
import { Redis } from "npm:ioredis@^5";
import { defineTask, QueueFullError, withBackgroundTasks } from "../../mod.ts";
import { bullmqBackend, bullmqWorker } from "../../bullmq.ts";
import { callHandler } from "../../testing.ts";
import { consoleLines, within } from "../_helpers/common.ts";
import { FloodRuns } from "../_helpers/flood_runs.ts";
import { ownRedisTest, startRedisServer } from "../_helpers/redis.ts";

const CLIENTS = 32;
const LENGTH = 3;
const MAX_PENDING = 45;
/** Tasks the worker runs at once: those the outage may make run twice. */
const CONCURRENCY = 1;

Deno.test({
  ...ownRedisTest,
  name:
    "a Redis outage during a flood: answers throughout, said once each way, every accepted task run in order, twice only if the outage cut its end",
}, async () => {
  await using redis = await startRedisServer({ durable: true });
  const connection = { host: "127.0.0.1", port: redis.port };
  const queue = `test-${crypto.randomUUID()}`;
  const output = consoleLines();
  // What each chain's tasks did, and how often each task id ran.
  const runs = new FloodRuns();
  const step = defineTask(({ id }, chain: string, index: number) => {
    runs.ran(id, chain, index);
  }, { name: "step" });
  const backend = bullmqBackend({ connection, queue, tasks: [step] });
  // A job whose finishing answer the outage cut off leaves the chain's next
  // job locked until BullMQ's stalled check: 5 s each, not 30.
  const worker = bullmqWorker({
    connection,
    queue,
    tasks: [step],
    concurrency: CONCURRENCY,
    lockDuration: 5_000,
    stalledInterval: 5_000,
  });
  // The tasks each request had accepted when it answered.
  const accepted = new Map<string, number>();
  const handler = withBackgroundTasks((request, _info, tasks) => {
    const chain = new URL(request.url).pathname.slice(1);
    accepted.set(chain, 0);
    for (let index = 0; index < LENGTH; index++) {
      try {
        tasks.addTask(step, chain, index);
      } catch (error) {
        if (!(error instanceof QueueFullError)) throw error;
        return new Response("busy", { status: 503 });
      }
      accepted.set(chain, index + 1);
    }
    return new Response("accepted", { status: 202 });
  }, { backend, maxPending: MAX_PENDING });
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    handler,
  );
  const statuses = new Map<number, number>();
  let answered = 0;
  const watchers: { status: number; count: number; resolve: () => void }[] = [];
  /** Resolves once `more` further requests have been answered `status`. */
  const answers = (status: number, more: number) => {
    const { promise, resolve } = Promise.withResolvers<void>();
    watchers.push({
      status,
      count: (statuses.get(status) ?? 0) + more,
      resolve,
    });
    return promise;
  };
  let flooding = true;
  const clients = Array.from({ length: CLIENTS }, async () => {
    while (flooding) {
      const response = await fetch(
        `http://127.0.0.1:${server.addr.port}/${crypto.randomUUID()}`,
        { method: "POST" },
      );
      await response.body?.cancel();
      const count = (statuses.get(response.status) ?? 0) + 1;
      statuses.set(response.status, count);
      answered++;
      for (const watcher of watchers) {
        if (watcher.status === response.status && count >= watcher.count) {
          watcher.resolve();
        }
      }
    }
  });
  try {
    await answers(202, 300);
    await redis.kill();
    await within(
      Promise.all([
        output.seen(/^The BullMQ backend cannot reach Redis/),
        output.seen(/^The BullMQ worker cannot reach Redis/),
      ]),
      60_000,
      () => `the outage was not seen within 60 s: ${output.lines.join(" | ")}`,
    );
    assert.equal(backend.status?.state, "down");
    // While Redis is away, chains wait to be stored, up to maxPending;
    // after that the server answers 503 at once.
    await answers(503, 1000);
    assert.ok(handler.stats.storing > 0);
    assert.ok(handler.stats.pending <= MAX_PENDING);
    assert.equal(handler.stats.backend?.state, "down");
    runs.back();
    await redis.restart();
    await within(
      Promise.all([
        output.seen(/^The BullMQ backend reaches Redis again/),
        output.seen(/^The BullMQ worker reaches Redis again/),
        answers(202, 300),
      ]),
      60_000,
      () => `not back within 60 s: ${output.lines.join(" | ")}`,
    );
    flooding = false;
    await Promise.all(clients);
    assert.equal(handler.stats.backend?.state, "up");
    // Every accepted task, even of a request answered 503, runs.
    const expected = [...accepted.values()].reduce((sum, n) => sum + n, 0);
    await within(
      runs.all(expected),
      60_000,
      () => `${expected - runs.distinct} tasks lost`,
    );
    runs.check(accepted, CONCURRENCY);
    assert.deepEqual([...statuses.keys()].sort(), [202, 503]);
    const said = (pattern: RegExp) =>
      output.lines.filter((line) => pattern.test(line)).length;
    assert.deepEqual(
      [
        said(/^The BullMQ backend cannot reach Redis/),
        said(/^The BullMQ backend reaches Redis again/),
        said(/^The BullMQ worker cannot reach Redis/),
        said(/^The BullMQ worker reaches Redis again/),
      ],
      [1, 1, 1, 1],
    );
    // Nothing else, but for what ioredis causes by sending again, after it
    // reconnects, a command Redis ran before it went away: BullMQ then finds
    // a job it had already moved on (docs/durable.md, Limitations).
    assert.deepEqual(
      output.lines.filter((line) =>
        !/reach(es)? Redis/.test(line) &&
        !/^The BullMQ worker failed: Error: Missing (key|lock) for job \S+ moveToFinished/
          .test(line)
      ),
      [],
    );
    console.log(
      `outage flood: ${answered} answers (${statuses.get(202)} × 202, ${
        statuses.get(503)
      } × 503), ${expected} tasks accepted, ${runs.distinct} run, ${runs.twice} twice`,
    );
  } finally {
    flooding = false;
    await Promise.allSettled(clients);
    await server.shutdown();
    await handler.drain({ timeout: 10_000 });
    await worker.close();
    await backend.close();
    output.restore();
  }
});

/**
 * The worker's writes that probe a Redis refusing them (SETs of a key that
 * ends in `:probe`), counted as they are refused.
 */
function refusedProbes(): {
  /** Resolves once `count` probes have been refused. */
  refused(count: number): Promise<void>;
  [Symbol.dispose](): void;
} {
  let refused = 0;
  const waiters: { count: number; resolve: () => void }[] = [];
  const prototype = Redis.prototype as unknown as {
    set(...args: unknown[]): Promise<unknown>;
  };
  const set = prototype.set;
  const spy = mock.method(
    prototype,
    "set",
    function (this: unknown, ...args: unknown[]) {
      const result = set.apply(this, args);
      if (String(args[0]).endsWith(":probe")) {
        result.catch(() => {
          refused++;
          for (const waiter of waiters) {
            if (refused >= waiter.count) waiter.resolve();
          }
        });
      }
      return result;
    },
  );
  return {
    refused(count: number): Promise<void> {
      if (refused >= count) return Promise.resolve();
      const { promise, resolve } = Promise.withResolvers<void>();
      waiters.push({ count, resolve });
      return promise;
    },
    [Symbol.dispose]: () => spy.mock.restore(),
  };
}

Deno.test({
  ...ownRedisTest,
  name:
    "a worker facing a Redis that refuses writes pauses: one line each way, no stack, and every waiting chain runs once when writes come back",
}, async (t) => {
  const cases: {
    name: string;
    refuse(admin: Redis): Promise<unknown>;
    accept(admin: Redis): Promise<unknown>;
    error: RegExp;
  }[] = [
    {
      name: "a read-only replica, as during a failover",
      refuse(admin) {
        // A replica of a master that is not there: it keeps its data.
        const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
        const { port } = listener.addr;
        listener.close();
        return admin.call("REPLICAOF", "127.0.0.1", String(port));
      },
      accept: (admin) => admin.call("REPLICAOF", "NO", "ONE"),
      error: /^READONLY /,
    },
    {
      name: "memory full",
      async refuse(admin) {
        await admin.config("SET", "maxmemory-policy", "noeviction");
        return admin.config("SET", "maxmemory", "1");
      },
      accept: (admin) => admin.config("SET", "maxmemory", "0"),
      error: /^OOM /,
    },
  ];
  for (const { name, refuse, accept, error } of cases) {
    await t.step(name, async () => {
      await using redis = await startRedisServer();
      const connection = { host: "127.0.0.1", port: redis.port };
      const queue = `test-${crypto.randomUUID()}`;
      const admin = new Redis(connection);
      const ran = new Map<string, number[]>();
      const runs = new Map<string, number>();
      const chains = Array.from({ length: 20 }, (_, i) => `chain-${i}`);
      let done = 0;
      const allRan = Promise.withResolvers<void>();
      const step = defineTask(({ id }, chain: string, index: number) => {
        ran.set(chain, [...ran.get(chain) ?? [], index]);
        runs.set(id, (runs.get(id) ?? 0) + 1);
        if (++done === chains.length * LENGTH) allRan.resolve();
      }, { name: "step" });
      const backend = bullmqBackend({ connection, queue, tasks: [step] });
      const handler = withBackgroundTasks((request, _info, tasks) => {
        const chain = new URL(request.url).pathname.slice(1);
        for (let index = 0; index < LENGTH; index++) {
          tasks.addTask(step, chain, index);
        }
        return new Response("accepted", { status: 202 });
      }, { backend });
      // Stored while Redis takes writes, run by a worker that starts once
      // it no longer does.
      await Promise.all(
        chains.map(async (chain) =>
          await (await callHandler(handler, `/${chain}`)).tasks
        ),
      );
      await refuse(admin);
      using output = consoleLines();
      using probes = refusedProbes();
      const worker = bullmqWorker({
        connection,
        queue,
        tasks: [step],
        concurrency: 4,
      });
      try {
        await within(
          output.seen(/^The BullMQ worker pauses: Redis refuses its writes/),
          20_000,
          () =>
            `no line said that Redis refuses within 20 s, but ${output.lines.length} others, the first: ${
              output.lines[0]
            }`,
        );
        // Refused a while: probed twice, at the pace of reconnections.
        await within(probes.refused(2), 20_000, "two probes");
        assert.deepEqual([output.lines.length, done], [1, 0]);
        await accept(admin);
        await within(
          Promise.all([
            output.seen(/^The BullMQ worker resumes: Redis accepts/),
            allRan.promise,
          ]),
          30_000,
          () => `${done} tasks ran; said: ${output.lines.join(" | ")}`,
        );
      } finally {
        await worker.close();
        await backend.close();
        admin.disconnect();
      }
      const [refused, accepted, ...others] = output.lines;
      assert.match(refused ?? "", /^The BullMQ worker pauses: Redis refuses/);
      assert.match(
        /\((.*)\); it tries again until Redis accepts them$/.exec(
          refused ?? "",
        )?.[1] ?? "",
        error,
      );
      assert.match(
        accepted ?? "",
        /^The BullMQ worker resumes: Redis accepts its writes again, after \d+\.\d s$/,
      );
      assert.deepEqual(others, []);
      for (const chain of chains) {
        assert.deepEqual(ran.get(chain), [...Array(LENGTH).keys()], chain);
      }
      assert.ok([...runs.values()].every((count) => count === 1));
    });
  }
});

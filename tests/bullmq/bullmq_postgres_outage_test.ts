// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// PostgreSQL gone, cut off or refusing writes: the BullMQ backend and
// workers on PostgreSQL say so once each way, store every chain handed over
// once it is back and none twice (a store's answer lost after its COMMIT
// included), and a worker pauses rather than spins while writes are refused.

import assert from "node:assert/strict";
import { mock } from "node:test";
import pg from "npm:pg@^8";
import {
  type BackendStatus,
  type DefinedTask,
  defineTask,
  withBackgroundTasks,
} from "../../mod.ts";
import type { BackendChain } from "../../backend.ts";
import { bullmqBackend, bullmqWorker } from "../../bullmq.ts";
import { callHandler } from "../../testing.ts";
import { consoleLines, within } from "../_helpers/common.ts";
import { postgresTest, startPostgres } from "../_helpers/postgres.ts";
import { startPostgresProxy } from "../_helpers/tcp_proxy.ts";

const LENGTH = 3;

/**
 * The chain `id` of `length` tasks `step(id, index)`, as a backend is handed
 * it.
 */
function chainOf(
  id: string,
  step: DefinedTask<[string, number]>,
  length: number,
): BackendChain {
  return {
    id,
    tasks: Array.from({ length }, (_, index) => ({
      name: step.name,
      args: [id, index],
      timeout: undefined,
      retry: undefined,
      task: step as DefinedTask,
    })),
    request: undefined,
    delivered: undefined,
  };
}

/** Runs `sql` as the server's superuser. */
async function admin(url: string, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

Deno.test({
  ...postgresTest,
  name:
    "bullmqBackend() and bullmqWorker() started while PostgreSQL is down say so once, and store and run the chains once it is up",
}, async () => {
  await using server = await startPostgres();
  await server.kill();
  const queue = `test-${crypto.randomUUID()}`;
  const ran: string[] = [];
  const allRan = Promise.withResolvers<void>();
  const step = defineTask((_context, chain: string, index: number) => {
    ran.push(`${chain}:${index}`);
    if (ran.length === 2 * LENGTH + 1) allRan.resolve();
  }, { name: "step" });
  using output = consoleLines();
  const backend = bullmqBackend({
    connection: server.url,
    queue,
    tasks: [step],
  });
  const worker = bullmqWorker({
    connection: server.url,
    queue,
    tasks: [step],
  });
  const handler = withBackgroundTasks((request, _info, tasks) => {
    const chain = new URL(request.url).pathname.slice(1);
    const length = chain === "single" ? 1 : LENGTH;
    for (let index = 0; index < length; index++) {
      tasks.addTask(step, chain, index);
    }
    return new Response("accepted", { status: 202 });
  }, { backend, handOver: "after-response" });
  try {
    for (const chain of ["first", "second", "single"]) {
      await callHandler(handler, `/${chain}`);
    }
    await within(
      Promise.all([
        output.seen(/^The BullMQ backend cannot reach PostgreSQL/),
        output.seen(/^The BullMQ worker cannot reach PostgreSQL/),
      ]),
      20_000,
      () => `not said within 20 s: ${output.lines.join(" | ")}`,
    );
    assert.equal(backend.status.state, "down");
    assert.equal(handler.stats.backend?.state, "down");
    assert.equal(handler.stats.storing, 2 * LENGTH + 1);
    await server.restart();
    await within(
      Promise.all([
        allRan.promise,
        output.seen(/^The BullMQ backend reaches PostgreSQL again/),
        output.seen(/^The BullMQ worker reaches PostgreSQL again/),
      ]),
      30_000,
      () => `${ran.length} tasks ran; said: ${output.lines.join(" | ")}`,
    );
    await handler.drain();
    assert.equal(handler.stats.storing, 0);
    assert.equal(backend.status.state, "up");
  } finally {
    // Chains never stored are given up, rather than waited for.
    await handler.drain({ timeout: 1_000 });
    await worker.close();
    await backend.close();
  }
  assert.deepEqual(
    ran.filter((task) => task.startsWith("first")),
    ["first:0", "first:1", "first:2"],
  );
  assert.deepEqual(
    ran.filter((task) => task.startsWith("second")),
    ["second:0", "second:1", "second:2"],
  );
  assert.deepEqual(ran.filter((task) => task === "single:0"), ["single:0"]);
  // One line each way, from each side.
  assert.deepEqual(
    output.lines.map((line) =>
      line.replace(/\(.*\)/, "(…)").replace(/after \d+\.\d s/, "after …")
    ).sort(),
    [
      "The BullMQ backend cannot reach PostgreSQL (…): chains wait to be stored until it is back",
      "The BullMQ backend reaches PostgreSQL again, after … without it",
      "The BullMQ worker cannot reach PostgreSQL (…); it tries again until PostgreSQL is back",
      "The BullMQ worker reaches PostgreSQL again, after … without it",
    ],
  );
});

Deno.test({
  ...postgresTest,
  name:
    "bullmqBackend() started while PostgreSQL is down says so before any request, as on Redis, and that it is back once it is",
}, async () => {
  await using server = await startPostgres();
  await server.kill();
  const step = defineTask(() => {}, { name: "step" });
  const statuses: BackendStatus[] = [];
  const down = Promise.withResolvers<void>();
  const up = Promise.withResolvers<void>();
  const backend = bullmqBackend({
    connection: server.url,
    queue: `test-${crypto.randomUUID()}`,
    tasks: [step],
    onStatusChange(status) {
      statuses.push(status);
      (status.state === "down" ? down : up).resolve();
    },
  });
  try {
    // No chain is handed over: a health check that reads the status (or
    // stats.backend) learns of the outage all the same.
    await within(down.promise, 10_000, "the status 'down'");
    assert.equal(backend.status.state, "down");
    assert.match(backend.status.error ?? "", /ECONNREFUSED/);
    await server.restart();
    await within(up.promise, 30_000, "the status 'up'");
    assert.deepEqual(statuses.map((status) => status.state), ["down", "up"]);
  } finally {
    await backend.close();
  }
});

Deno.test({
  ...postgresTest,
  name:
    "bullmqBackend() on PostgreSQL does not take a chain of three tasks for stored when PostgreSQL is down: it waits, and gives it up at its signal",
}, async () => {
  await using server = await startPostgres();
  const queue = `test-${crypto.randomUUID()}`;
  const step = defineTask((_context, _chain: string, _index: number) => {}, {
    name: "step",
  });
  const statuses: string[] = [];
  const backend = bullmqBackend({
    connection: server.url,
    queue,
    tasks: [step],
    onStatusChange: (status) => void statuses.push(status.state),
  });
  try {
    // Up, with BullMQ's schema made, and its flow producer ready.
    await backend.enqueue(chainOf("before", step, LENGTH));
    await server.kill();
    const signal = AbortSignal.timeout(2_000);
    await assert.rejects(
      backend.enqueue(chainOf("while-down", step, LENGTH), { signal }),
      (error) => error === signal.reason,
    );
    assert.deepEqual(statuses, ["down"]);
  } finally {
    await backend.close();
  }
});

for (
  const { cut, length, what } of [
    {
      cut: "before-execute",
      length: LENGTH,
      what: "before PostgreSQL runs it: the backend stores it again",
    },
    {
      cut: "after-commit",
      length: 1,
      what:
        "after its COMMIT, with the answer lost until a worker ran its one-task chains: nothing is added twice",
    },
    {
      cut: "after-commit",
      length: LENGTH,
      what:
        "after its COMMIT, with the answer lost until a worker ran the first task of each of its chains: nothing is added twice",
    },
  ] as const
) {
  Deno.test({
    ...postgresTest,
    name:
      `bullmqBackend() on PostgreSQL runs each task once when its store's connection is cut ${what}`,
  }, async () => {
    await using server = await startPostgres();
    const queue = `test-${crypto.randomUUID()}`;
    const runs = new Map<string, number>();
    const ran: string[] = [];
    // Chains handed over together: one store, which the proxy cuts.
    const chains = Array.from({ length: 5 }, (_, i) => `chain-${i}`);
    const total = chains.length * length;
    let done = 0;
    const allRan = Promise.withResolvers<void>();
    const firstRound = Promise.withResolvers<void>();
    const lastRan = Promise.withResolvers<void>();
    const step = defineTask(({ id }, chain: string, index: number) => {
      runs.set(id, (runs.get(id) ?? 0) + 1);
      ran.push(`${chain}:${index}`);
      if (chain === "last") lastRan.resolve();
      // The cut store's chains ran (of a longer chain, its first task),
      // the answer still held back: now the connection may go.
      if (ran.filter((task) => task.endsWith(":0")).length === chains.length) {
        firstRound.resolve();
      }
      if (++done === total) allRan.resolve();
    }, { name: "step" });
    await using proxy = startPostgresProxy(
      server.port,
      cut === "after-commit" ? { cut, hold: firstRound.promise } : { cut },
    );
    const viaProxy = server.url.replace(`:${server.port}/`, `:${proxy.port}/`);
    const statuses: string[] = [];
    let back = Promise.withResolvers<void>();
    // The worker reaches PostgreSQL directly.
    const worker = bullmqWorker({
      connection: server.url,
      queue,
      tasks: [step],
      concurrency: 4,
    });
    const backend = bullmqBackend({
      connection: viaProxy,
      queue,
      tasks: [step],
      onStatusChange({ state }) {
        statuses.push(state);
        if (state === "up") back.resolve();
        else back = Promise.withResolvers();
      },
    });
    try {
      await Promise.all(
        chains.map((chain) => backend.enqueue(chainOf(chain, step, length))),
      );
      await within(allRan.promise, 30_000, () => `${done} of ${total} ran`);
      assert.equal(proxy.cuts, 1);
      // Had a chain been added again, its tasks would have run again by
      // the time a chain stored after it runs: the worker takes the jobs in
      // the order they were added.
      await backend.enqueue(chainOf("last", step, 1));
      await within(lastRan.promise, 10_000, "the last chain");
      // The cut was an outage, told once each way (or not at all, when the
      // chains were stored again before the backend told it).
      if (statuses.length > 0) await within(back.promise, 10_000, "back up");
      assert.deepEqual(statuses, statuses.length === 0 ? [] : ["down", "up"]);
    } finally {
      await worker.close();
      await backend.close();
    }
    assert.deepEqual(
      [...runs.entries()].filter(([, count]) => count !== 1),
      [],
    );
    for (const chain of chains) {
      assert.deepEqual(
        ran.filter((task) => task.startsWith(`${chain}:`)),
        [...Array(length).keys()].map((index) => `${chain}:${index}`),
      );
    }
  });
}

/**
 * The worker's writes that probe a PostgreSQL refusing them, counted as they
 * are refused.
 */
function refusedProbes(): {
  /** Resolves once `count` probes have been refused. */
  refused(count: number): Promise<void>;
  [Symbol.dispose](): void;
} {
  let refused = 0;
  const waiters: { count: number; resolve: () => void }[] = [];
  const prototype = pg.Pool.prototype as unknown as {
    query(...args: unknown[]): Promise<unknown>;
  };
  const query = prototype.query;
  const spy = mock.method(
    prototype,
    "query",
    function (this: unknown, ...args: unknown[]) {
      const result = query.apply(this, args);
      if (JSON.stringify(args[1] ?? []).includes("background-tasks:probe")) {
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
  ...postgresTest,
  name:
    "a worker facing a PostgreSQL that refuses writes pauses: one line each way, no stack, and every waiting chain runs once when writes come back",
}, async () => {
  await using server = await startPostgres();
  const connection = server.url;
  const queue = `test-${crypto.randomUUID()}`;
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
  // Stored while PostgreSQL takes writes, run by a worker that starts once
  // it no longer does: a hot standby, or a primary made read-only, answers
  // every write with SQLSTATE 25006.
  await Promise.all(
    chains.map(async (chain) =>
      await (await callHandler(handler, `/${chain}`)).tasks
    ),
  );
  await admin(
    connection,
    "ALTER SYSTEM SET default_transaction_read_only = on",
  );
  await admin(connection, "SELECT pg_reload_conf()");
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
      output.seen(/^The BullMQ worker pauses: PostgreSQL refuses its writes/),
      20_000,
      () =>
        `no line said that PostgreSQL refuses within 20 s, but ${output.lines.length} others, the first: ${
          output.lines[0]
        }`,
    );
    await within(probes.refused(2), 20_000, "two probes");
    assert.deepEqual([output.lines.length, done], [1, 0]);
    await admin(
      connection,
      "ALTER SYSTEM SET default_transaction_read_only = off",
    );
    await admin(connection, "SELECT pg_reload_conf()");
    await within(
      Promise.all([
        output.seen(/^The BullMQ worker resumes: PostgreSQL accepts/),
        allRan.promise,
      ]),
      30_000,
      () => `${done} tasks ran; said: ${output.lines.join(" | ")}`,
    );
  } finally {
    await worker.close();
    await backend.close();
  }
  const [refused, accepted, ...others] = output.lines;
  assert.match(
    refused ?? "",
    /^The BullMQ worker pauses: PostgreSQL refuses its writes \(cannot execute \w+ in a read-only transaction\); it tries again until PostgreSQL accepts them$/,
  );
  assert.match(
    accepted ?? "",
    /^The BullMQ worker resumes: PostgreSQL accepts its writes again, after \d+\.\d s$/,
  );
  assert.deepEqual(others, []);
  for (const chain of chains) {
    assert.deepEqual(ran.get(chain), [...Array(LENGTH).keys()], chain);
  }
  assert.ok([...runs.values()].every((count) => count === 1));
});

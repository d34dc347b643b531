// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// A PostgreSQL restart in the middle of a flood: the web server goes on
// answering (202 once a chain is stored, 503 once `maxPending` is reached),
// says once that PostgreSQL is gone and once that it is back, and every
// task it accepted runs, in order, exactly once, when PostgreSQL returns.
// Slow (seconds of outage and recovery); run by `deno task test:slow`.

import assert from "node:assert/strict";
import { defineTask, QueueFullError, withBackgroundTasks } from "../../mod.ts";
import { bullmqBackend, bullmqWorker } from "../../bullmq.ts";
import { consoleLines, within } from "../_helpers/common.ts";
import { FloodRuns } from "../_helpers/flood_runs.ts";
import { postgresTest, startPostgres } from "../_helpers/postgres.ts";

const CLIENTS = 32;
const LENGTH = 3;
const MAX_PENDING = 45;
/** Tasks the worker runs at once: those the outage may make run twice. */
const CONCURRENCY = 4;

Deno.test({
  ...postgresTest,
  name:
    "a PostgreSQL restart during a flood: answers throughout, said once each way, every accepted task run in order, twice only if the outage cut its end",
}, async () => {
  await using postgres = await startPostgres();
  const connection = postgres.url;
  const queue = `test-${crypto.randomUUID()}`;
  const output = consoleLines();
  // What each chain's tasks did, and how often each task id ran.
  const runs = new FloodRuns();
  const step = defineTask(({ id }, chain: string, index: number) => {
    runs.ran(id, chain, index);
  }, { name: "step" });
  const backend = bullmqBackend({ connection, queue, tasks: [step] });
  // A job whose fetch the restart cut off is locked to nobody until
  // BullMQ's stalled check: 5 s each, not 30.
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
    await postgres.kill();
    await within(
      Promise.all([
        output.seen(/^The BullMQ backend cannot reach PostgreSQL/),
        output.seen(/^The BullMQ worker cannot reach PostgreSQL/),
      ]),
      60_000,
      () => `the outage was not seen within 60 s: ${output.lines.join(" | ")}`,
    );
    assert.equal(backend.status.state, "down");
    // While PostgreSQL is away, chains wait to be stored, up to maxPending;
    // after that the server answers 503 at once.
    await answers(503, 1000);
    assert.ok(handler.stats.storing > 0);
    assert.ok(handler.stats.pending <= MAX_PENDING);
    assert.equal(handler.stats.backend?.state, "down");
    runs.back();
    await postgres.restart();
    await within(
      Promise.all([
        output.seen(/^The BullMQ backend reaches PostgreSQL again/),
        output.seen(/^The BullMQ worker reaches PostgreSQL again/),
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
        said(/^The BullMQ backend cannot reach PostgreSQL/),
        said(/^The BullMQ backend reaches PostgreSQL again/),
        said(/^The BullMQ worker cannot reach PostgreSQL/),
        said(/^The BullMQ worker reaches PostgreSQL again/),
      ],
      [1, 1, 1, 1],
    );
    // Nothing else, but for a job whose finishing PostgreSQL committed just
    // before it went away, its answer lost: BullMQ then records it again,
    // and finds it already moved on (docs/durable.md, Limitations).
    assert.deepEqual(
      output.lines.filter((line) =>
        !/reach(es)? PostgreSQL/.test(line) &&
        !/^The BullMQ worker failed: Error: Job \S+ is not in the active state\. moveToFinished/
          .test(line)
      ),
      [],
    );
    console.log(
      `PostgreSQL restart flood: ${answered} answers (${
        statuses.get(202)
      } × 202, ${
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

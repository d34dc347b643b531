// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// A backend's close() at a shutdown. serve() with a Deno KV backend, shut
// down by SIGTERM while the backend's listener runs a task, in a process of
// its own: the task finishes within shutdownTimeout, or is handed back to
// the store at the deadline, and the shutdown line says which; a second
// process on the same file runs what was handed back. Then close() itself:
// what it waits for and counts, what it puts back unrun, a second call; and
// a BullMQ backend closed by serve() and again by its owner.

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import {
  type DefinedTask,
  defineTask,
  type DrainResult,
  serve,
  withBackgroundTasks,
} from "../../mod.ts";
import { kvBackend } from "../../kv.ts";
import { bullmqBackend } from "../../bullmq.ts";
import { callHandler } from "../../testing.ts";
import { guardedTest } from "../_helpers/common.ts";
import { type Script, startScript } from "../_helpers/process.ts";
import { redisTest, startRedis } from "../_helpers/redis.ts";

/**
 * A server on the KV file `path` whose task `step` prints when it starts,
 * ends (its outcome, from `onTaskEnd`) and finishes; it takes `STEP_MS`
 * milliseconds, or until its signal aborts.
 */
const server = `
  import { defineTask, serve } from "@afterward/background-tasks";
  import { kvBackend } from "@afterward/background-tasks/kv";
  const stepMs = Number(Deno.env.get("STEP_MS"));
  const step = defineTask(async ({ id, signal }) => {
    console.log("started " + id);
    await new Promise((resolve, reject) => {
      const timer = setTimeout(resolve, stepMs);
      signal.addEventListener("abort", () => {
        clearTimeout(timer);
        reject(signal.reason);
      });
    });
    console.log("finished " + id);
  }, { name: "step" });
  const kv = await Deno.openKv(Deno.env.get("KV_PATH"));
  const server = serve({
    hostname: "127.0.0.1",
    port: 0,
    shutdownTimeout: Number(Deno.env.get("SHUTDOWN_MS")),
    onListen({ port }) { console.log(port); },
    backend: kvBackend({ kv, tasks: [step], redelivery: [100] }),
    onTaskEnd: ({ name, outcome }) => console.log("end " + name + " " + outcome),
  }, (_request, _info, tasks) => {
    tasks.addTask(step);
    return new Response("accepted", { status: 202 });
  });
`;

async function start(
  path: string,
  env: { STEP_MS: string; SHUTDOWN_MS: string },
): Promise<Script & { port: number }> {
  const script = await startScript(
    server,
    [
      "--unstable-kv",
      "--allow-net=127.0.0.1",
      "--allow-write",
      "--allow-env",
    ],
    20_000,
    { KV_PATH: path, ...env },
  );
  return Object.assign(script, { port: Number(await script.nextLine()) });
}

/** Posts a chain and waits until its task has started: its id. */
async function startTask(script: Script & { port: number }): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${script.port}/`, {
    method: "POST",
  });
  assert.equal(response.status, 202);
  await response.body?.cancel();
  const line = await script.nextLine();
  assert.match(line, /^started \S+:0$/);
  return line.slice("started ".length);
}

async function withDatabase(
  test: (path: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "background_tasks_kv_stop_" });
  try {
    await test(`${dir}/tasks.sqlite3`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("serve() with kvBackend lets a running task finish within shutdownTimeout, says so, and exits 0", async () => {
  await withDatabase(async (path) => {
    await using script = await start(path, {
      STEP_MS: "500",
      SHUTDOWN_MS: "10000",
    });
    const id = await startTask(script);
    script.child.kill("SIGTERM");
    const { code, stdout, stderr } = await script.exit();
    assert.deepEqual(stdout.slice(2), [`finished ${id}`, "end step succeeded"]);
    assert.equal(
      stderr.trim(),
      "Shutdown drained every background task: 1 succeeded and 0 failed while draining",
    );
    assert.equal(code, 0);
  });
});

Deno.test("serve() with kvBackend hands a task that outlives shutdownTimeout back to the store, says so, exits 1, and another process runs it", async () => {
  await withDatabase(async (path) => {
    let id: string;
    {
      await using script = await start(path, {
        STEP_MS: "60000",
        SHUTDOWN_MS: "200",
      });
      id = await startTask(script);
      script.child.kill("SIGTERM");
      const { code, stdout, stderr } = await script.exit();
      assert.deepEqual(stdout.slice(2), ["end step abandoned"]);
      assert.equal(
        stderr.trim(),
        "Shutdown abandoned 1 background task (step: 1), 1 of them handed back to the store; 0 succeeded and 0 failed while draining",
      );
      assert.equal(code, 1);
    }
    await using again = await start(path, {
      STEP_MS: "0",
      SHUTDOWN_MS: "10000",
    });
    assert.equal(await again.nextLine(), `started ${id}`);
    assert.equal(await again.nextLine(), `finished ${id}`);
    assert.equal(await again.nextLine(), "end step succeeded");
    again.child.kill("SIGTERM");
    const { code, stderr } = await again.exit();
    assert.equal(code, 0, stderr);
  });
});

/** A chain of one `task`, handed to `backend` through a wrapped handler. */
async function handOne(
  backend: ReturnType<typeof kvBackend>,
  task: DefinedTask,
): Promise<void> {
  const handler = withBackgroundTasks((_request, _info, tasks) => {
    tasks.addTask(task);
    return new Response("ok");
  }, { backend });
  await (await callHandler(handler, "/")).tasks;
}

guardedTest(
  "kvBackend() close({ signal }) waits for the task running, and counts it",
  async () => {
    const started = Promise.withResolvers<void>();
    const release = Promise.withResolvers<void>();
    const step = defineTask(async () => {
      started.resolve();
      await release.promise;
    }, { name: "step" });
    const kv = await Deno.openKv(":memory:");
    const backend = kvBackend({ kv, tasks: [step] });
    try {
      await handOne(backend, step);
      await started.promise;
      let closed = false;
      const closing = backend.close({ signal: new AbortController().signal })
        .then((result) => {
          closed = true;
          return result;
        });
      await new Promise((resolve) => setTimeout(resolve, 0));
      assert.equal(closed, false, "close() did not wait for the task");
      release.resolve();
      assert.deepEqual(await closing, {
        succeeded: 1,
        failed: 0,
        handedBack: 0,
        handedBackTasks: {},
      });
    } finally {
      kv.close();
    }
  },
);

guardedTest(
  "kvBackend() close() puts back, unrun, a step delivered after it, for another backend to run",
  async () => {
    let runs = 0;
    const ran = Promise.withResolvers<string>();
    const step = defineTask(({ id }) => {
      runs++;
      ran.resolve(id);
    }, { name: "step" });
    const kv = await Deno.openKv(":memory:");
    const closing = kvBackend({
      kv,
      tasks: [step],
      listen: false,
      redelivery: [1],
    });
    const other = kvBackend({ kv, tasks: [step], listen: false });
    const handled: boolean[] = [];
    const handledAgain = Promise.withResolvers<boolean>();
    let first = true;
    kv.listenQueue(async (message) => {
      if (first) {
        first = false;
        assert.deepEqual(await closing.close(), {
          succeeded: 0,
          failed: 0,
          handedBack: 0,
          handedBackTasks: {},
        });
        handled.push(await closing.handle(message));
        assert.equal(runs, 0);
      } else {
        handledAgain.resolve(await other.handle(message));
      }
    });
    try {
      await handOne(closing, step);
      assert.match(await ran.promise, /:0$/);
      assert.equal(await handledAgain.promise, true);
      assert.deepEqual([runs, handled], [1, [true]]);
    } finally {
      await other.close();
      kv.close();
    }
  },
);

guardedTest(
  "kvBackend() close() is harmless a second time, and gives up at once without a signal",
  async () => {
    const started = Promise.withResolvers<void>();
    const ends: string[] = [];
    const step = defineTask(({ signal }) => {
      started.resolve();
      return new Promise<void>((_resolve, reject) =>
        signal.addEventListener("abort", () => reject(signal.reason))
      );
    }, { name: "step" });
    const kv = await Deno.openKv(":memory:");
    const backend = kvBackend({
      kv,
      tasks: [step],
      onTaskEnd: ({ outcome }) => void ends.push(outcome),
    });
    try {
      await handOne(backend, step);
      await started.promise;
      const waiting = backend.close({ signal: new AbortController().signal });
      const atOnce = backend.close();
      assert.equal(atOnce, waiting);
      const expected = {
        succeeded: 0,
        failed: 0,
        handedBack: 1,
        handedBackTasks: { step: 1 },
      };
      assert.deepEqual(await atOnce, expected);
      assert.deepEqual(await backend.close(), expected);
      assert.deepEqual(ends, ["abandoned"]);
      assert.throws(
        () => backend.close({ signal: "soon" as unknown as AbortSignal }),
        {
          name: "TypeError",
          message:
            `Cannot close KV backend as 'signal' must be an AbortSignal: current value is "soon"`,
        },
      );
    } finally {
      kv.close();
    }
  },
);

Deno.test({
  name:
    "serve() closes a BullMQ backend at its shutdown, and closing it again is harmless",
  ...redisTest,
}, async () => {
  await using redis = await startRedis();
  const step = defineTask(() => {}, { name: "step" });
  const backend = bullmqBackend({
    connection: { host: "127.0.0.1", port: redis.port },
    queue: `test-${crypto.randomUUID()}`,
    tasks: [step],
  });
  const server = serve({
    hostname: "127.0.0.1",
    port: 0,
    shutdownSignals: [],
    onListen() {},
    onShutdown() {},
    backend,
  }, (_request, _info, tasks) => {
    tasks.addTask(step);
    return new Response("accepted", { status: 202 });
  });
  const response = await fetch(`http://127.0.0.1:${server.addr.port}/`);
  await response.body?.cancel();
  const result = await server.shutdown();
  assert.deepEqual([result.abandoned, result.handedBack], [0, undefined]);
  const late = {
    id: "late",
    tasks: [],
    request: undefined,
    delivered: undefined,
  };
  await assert.rejects(backend.enqueue(late), {
    message: "Cannot enqueue chain as the BullMQ backend is closed",
  });
  await backend.close();
  await assert.rejects(backend.enqueue(late), {
    message: "Cannot enqueue chain as the BullMQ backend is closed",
  });
});

Deno.test("serve() with kvBackend ends its shutdown at shutdownTimeout while the database's write lock is held elsewhere, and hands the task back once it is free", async () => {
  await withDatabase(async (path) => {
    const started = Promise.withResolvers<void>();
    let runs = 0;
    const step = defineTask(({ signal }) => {
      if (++runs > 1) return;
      started.resolve();
      return new Promise<void>((_resolve, reject) =>
        signal.addEventListener("abort", () => reject(signal.reason))
      );
    }, { name: "step" });
    const kv = await Deno.openKv(path);
    const backend = kvBackend({
      kv,
      tasks: [step],
      listen: false,
      redelivery: [100],
    });
    // The deliveries, routed here so that the test can wait for them.
    const handled: Promise<boolean>[] = [];
    kv.listenQueue(async (message) => {
      const handling = backend.handle(message);
      handled.push(handling);
      await handling;
    });
    const results: DrainResult[] = [];
    const server = serve({
      hostname: "127.0.0.1",
      port: 0,
      shutdownSignals: [],
      shutdownTimeout: 200,
      onListen() {},
      onShutdown: (result) => void results.push(result),
      backend,
    }, (_request, _info, tasks) => {
      tasks.addTask(step);
      return new Response("accepted", { status: 202 });
    });
    // A long write of another process (a backup, say): SQLite's own lock,
    // on which each of Deno KV's writes waits 5 s before it fails.
    const other = new DatabaseSync(path, { timeout: 5_000 });
    let locked = false;
    let release: ReturnType<typeof setTimeout> | undefined;
    try {
      const response = await fetch(`http://127.0.0.1:${server.addr.port}/`);
      await response.body?.cancel();
      await started.promise;
      other.exec("BEGIN IMMEDIATE");
      locked = true;
      // Released in any case, so that a shutdown that waits for it ends.
      release = setTimeout(() => {
        other.exec("COMMIT");
        locked = false;
      }, 15_000);
      const begun = performance.now();
      await server.shutdown();
      const took = performance.now() - begun;
      assert.ok(took < 2_000, `the shutdown took ${Math.round(took)} ms`);
      assert.deepEqual(
        results.map(({ abandoned, handedBack }) => [abandoned, handedBack]),
        [[1, 1]],
      );
      assert.equal(runs, 1);
    } finally {
      clearTimeout(release);
      if (locked) other.exec("COMMIT");
      other.close();
    }
    // Once the lock is free, the step is put back, and its delivery ends.
    assert.equal(await handled[0], true);
    kv.close();
  });
});

// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Two server processes on one Deno KV file, as during a rolling restart's
// overlap: under a load of a few hundred requests, every request is answered
// 202 and every chain runs once, in order; and a task running long in one
// process is not run by a second process that opens the file meanwhile.

import assert from "node:assert/strict";
import { type Script, startScript } from "../_helpers/process.ts";

const CHAINS = 300;
const CONCURRENCY = 16;

/**
 * A server on `KV_PATH` whose chains are three `step`s, each printing its
 * id, start and end; a handler error is printed too. `STEP_MS`: how long a
 * step works.
 */
const server = `
  import { defineTask, serve } from "@afterward/background-tasks";
  import { kvBackend } from "@afterward/background-tasks/kv";
  const stepMs = Number(Deno.env.get("STEP_MS"));
  const now = () => performance.timeOrigin + performance.now();
  const step = defineTask(async ({ id }) => {
    const start = now();
    console.log("started " + id);
    if (stepMs > 0) await new Promise((resolve) => setTimeout(resolve, stepMs));
    console.log("ran " + id + " " + start + " " + now());
  }, { name: "step" });
  const kv = await Deno.openKv(Deno.env.get("KV_PATH"));
  serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen({ port }) { console.log(port); },
    backend: kvBackend({ kv, tasks: [step], redelivery: [100] }),
    onError(error) {
      console.log("error " + error + " (" + error.cause + ")");
      return new Response("error", { status: 500 });
    },
  }, (request, _info, tasks) => {
    const length = Number(new URL(request.url).searchParams.get("tasks") ?? 3);
    for (let i = 0; i < length; i++) tasks.addTask(step);
    return new Response("accepted", { status: 202 });
  });
`;

async function start(
  path: string,
  stepMs: number,
): Promise<Script & { port: number }> {
  const script = await startScript(
    server,
    [
      "--unstable-kv",
      "--allow-net=127.0.0.1",
      "--allow-write",
      "--allow-env",
    ],
    60_000,
    { KV_PATH: path, STEP_MS: String(stepMs) },
  );
  return Object.assign(script, { port: Number(await script.nextLine()) });
}

async function withDatabase(
  test: (path: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "background_tasks_two_" });
  try {
    await test(`${dir}/tasks.sqlite3`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("two servers on one Deno KV file answer every request 202 and run every chain once, in order", async () => {
  await withDatabase(async (path) => {
    await using first = await start(path, 0);
    await using second = await start(path, 0);
    const servers = [first, second];

    // Every line both print, until each task has run once.
    const lines: string[] = [];
    const ran = new Set<string>();
    const allRan = Promise.withResolvers<void>();
    const expected = CHAINS * 3;
    const reading = servers.map(async (script) => {
      for (;;) {
        const line = await script.nextLine().catch(() => undefined);
        if (line === undefined) return;
        lines.push(line);
        if (line.startsWith("ran ")) ran.add(line.split(" ")[1]!);
        if (ran.size === expected) allRan.resolve();
      }
    });

    const statuses: number[] = [];
    let sent = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (sent < CHAINS) {
          const { port } = servers[sent++ % 2]!;
          const response = await fetch(`http://127.0.0.1:${port}/`, {
            method: "POST",
          });
          await response.body?.cancel();
          statuses.push(response.status);
        }
      }),
    );
    const refused = statuses.filter((status) => status !== 202).length;
    if (refused === 0) await allRan.promise;
    for (const script of servers) script.child.kill("SIGTERM");
    const exits = await Promise.all(servers.map((script) => script.exit()));
    await Promise.all(reading);

    // Each task's runs, by id.
    const runs = new Map<string, [number, number][]>();
    for (const line of lines) {
      const [word, id, start, end] = line.split(" ");
      if (word !== "ran") continue;
      runs.set(id!, [...runs.get(id!) ?? [], [Number(start), Number(end)]]);
    }
    const twice = [...runs].filter(([, times]) => times.length > 1)
      .map(([id]) => id);
    assert.deepEqual(
      {
        refused,
        errors: lines.filter((line) => line.startsWith("error ")).slice(0, 3),
        twice: twice.slice(0, 3),
      },
      { refused: 0, errors: [], twice: [] },
    );
    assert.equal(runs.size, expected);
    // In order: each task started once the one before it had ended.
    for (const [id, times] of runs) {
      const cut = id.lastIndexOf(":");
      const index = Number(id.slice(cut + 1));
      if (index === 0) continue;
      const before = runs.get(`${id.slice(0, cut)}:${index - 1}`)!;
      assert.ok(
        times[0]![0] >= before[0]![1],
        `${id} started before the task before it ended`,
      );
    }
    for (const { code, stderr } of exits) {
      assert.doesNotMatch(stderr, /database is locked/);
      assert.equal(code, 0, stderr);
    }
    // Every chain's end was written: no progress is left.
    const kv = await Deno.openKv(path);
    try {
      const left = await Array.fromAsync(
        kv.list({ prefix: ["background-tasks", "chains"] }),
      );
      assert.deepEqual(left, []);
    } finally {
      kv.close();
    }
  });
});

Deno.test("a second server that opens the Deno KV file does not run a task the first one is still running", async () => {
  await withDatabase(async (path) => {
    await using first = await start(path, 7_000);
    const response = await fetch(`http://127.0.0.1:${first.port}/?tasks=1`, {
      method: "POST",
    });
    assert.equal(response.status, 202);
    await response.body?.cancel();
    const started = await first.nextLine();
    assert.match(started, /^started \S+:0$/);
    // Deno KV takes a message running more than 5 s after it was due for
    // dead, and queues it again when a process opens the file: the second
    // server opens it once the task has run that long.
    await new Promise((resolve) => setTimeout(resolve, 5_500));
    await using second = await start(path, 0);
    const secondLines: string[] = [];
    const reading = (async () => {
      for (;;) {
        const line = await second.nextLine().catch(() => undefined);
        if (line === undefined) return;
        secondLines.push(line);
      }
    })();
    assert.match(await first.nextLine(), /^ran \S+:0 /);
    first.child.kill("SIGTERM");
    second.child.kill("SIGTERM");
    const exits = await Promise.all([first.exit(), second.exit()]);
    await reading;
    assert.deepEqual(secondLines, []);
    for (const { code, stderr } of exits) assert.equal(code, 0, stderr);
  });
});

// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Keyed tasks on two server processes sharing one Deno KV file, requests
// sent to both in turn: "queue" duplicates run one at a time and in order,
// 8 keys at once; "skip" adds nothing while a duplicate waits, under a
// flood; a burst of 20 "replace" adds with a delay runs once, with the
// last arguments; a delay is kept. A server killed while it holds a key is
// kv_keyed_kill_slow_test.ts's.

import assert from "node:assert/strict";
import { type Script, startScript } from "../_helpers/process.ts";

const DELAY_MS = 1_500;

/**
 * A server on `KV_PATH`, named `LABEL`. `POST /?task=q&key=k&v=v` adds
 * task `q` (`"queue"`), `s` (`"skip"`), `r` (`"replace"`, delayed) or `d`
 * (`"queue"`, delayed) for key `k` with argument `v`; each prints its
 * start and end, with its id, the server and the time. A `v` starting with
 * "hold" waits until `POST /release?key=k`. `GET /stats` answers the
 * handler's stats; `onTaskEnd` prints the tasks deduplicated.
 */
const server = `
  import { defineTask, serve } from "@afterward/background-tasks";
  import { kvBackend } from "@afterward/background-tasks/kv";
  const label = Deno.env.get("LABEL");
  const delay = Number(Deno.env.get("DELAY_MS"));
  const now = () => performance.timeOrigin + performance.now();
  const held = new Map();
  const gate = (key) => {
    if (!held.has(key)) held.set(key, Promise.withResolvers());
    return held.get(key);
  };
  const work = (name) => async ({ id }, key, v) => {
    console.log(["start", name, key, v, id, label, now()].join(" "));
    if (v.startsWith("hold")) await gate(key).promise;
    else await new Promise((resolve) => setTimeout(resolve, 30));
    console.log(["end", name, key, v, id, label, now()].join(" "));
  };
  const key = (key) => key;
  const tasks = {
    q: defineTask(work("q"), { name: "q", key }),
    s: defineTask(work("s"), { name: "s", key, onDuplicate: "skip" }),
    r: defineTask(work("r"), { name: "r", key, onDuplicate: "replace", delay }),
    d: defineTask(work("d"), { name: "d", key, delay }),
  };
  const kv = await Deno.openKv(Deno.env.get("KV_PATH"));
  const app = serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen({ port }) { console.log(port); },
    backend: kvBackend({ kv, tasks: Object.values(tasks), redelivery: [100] }),
    onTaskEnd(event) {
      if (event.outcome !== "deduplicated") return;
      console.log(["deduplicated", event.name, event.id ?? "-", label].join(" "));
    },
    onError(error) {
      console.log("error " + error + " (" + error?.cause + ")");
      return new Response("error", { status: 500 });
    },
  }, (request, _info, added) => {
    const url = new URL(request.url);
    const param = (name) => url.searchParams.get(name);
    if (url.pathname === "/stats") return Response.json(app.handler.stats);
    if (url.pathname === "/release") {
      gate(param("key")).resolve();
      return new Response("released");
    }
    added.addTask(tasks[param("task")], param("key"), param("v"));
    return new Response("accepted", { status: 202 });
  });
`;

/** What a task printed: `start`/`end`, its task, key, argument, id, server and time. */
interface Line {
  word: string;
  task: string;
  key: string;
  v: string;
  id: string;
  server: string;
  at: number;
}

/** The lines both servers print, and a way to wait for one. */
class Output {
  readonly lines: string[] = [];
  #waiters: { test: (line: string) => boolean; resolve: () => void }[] = [];

  read(script: Script): Promise<void> {
    return (async () => {
      for (;;) {
        const line = await script.nextLine().catch(() => undefined);
        if (line === undefined) return;
        this.lines.push(line);
        this.#waiters = this.#waiters.filter(({ test, resolve }) =>
          test(line) ? (resolve(), false) : true
        );
      }
    })();
  }

  /** Resolves once a line matching `pattern` has been printed `count` times. */
  seen(pattern: RegExp, count = 1): Promise<void> {
    let seen = this.lines.filter((line) => pattern.test(line)).length;
    if (seen >= count) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#waiters.push({
      test: (line) => pattern.test(line) && ++seen >= count,
      resolve,
    });
    return promise;
  }

  /** The task lines of `task` (and `key`), parsed. */
  tasks(task: string, key?: string): Line[] {
    return this.lines.flatMap((line) => {
      const [word, name, k, v, id, server, at] = line.split(" ");
      if ((word !== "start" && word !== "end") || name !== task) return [];
      if (key !== undefined && k !== key) return [];
      return [{
        word: word!,
        task: name,
        key: k!,
        v: v!,
        id: id!,
        server: server!,
        at: Number(at),
      }];
    });
  }
}

async function start(
  path: string,
  label: string,
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
    { KV_PATH: path, LABEL: label, DELAY_MS: String(DELAY_MS) },
  );
  return Object.assign(script, { port: Number(await script.nextLine()) });
}

async function post(
  port: number,
  query: Record<string, string>,
  path = "/",
): Promise<number> {
  const response = await fetch(
    `http://127.0.0.1:${port}${path}?${new URLSearchParams(query)}`,
    { method: "POST" },
  );
  await response.body?.cancel();
  return response.status;
}

async function stats(port: number): Promise<{ deduplicated: number }> {
  return await (await fetch(`http://127.0.0.1:${port}/stats`)).json();
}

/** Each run of a task, from its two lines, by id. */
function runs(lines: Line[]): { v: string; start: number; end: number }[] {
  const byId = new Map<string, { v: string; start: number; end: number }>();
  for (const line of lines) {
    const run = byId.get(line.id) ?? { v: line.v, start: NaN, end: NaN };
    if (line.word === "start") run.start = line.at;
    else run.end = line.at;
    byId.set(line.id, run);
  }
  return [...byId.values()].sort((a, b) => a.start - b.start);
}

Deno.test("two servers on one Deno KV file keep every keyed mode and delay", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "background_tasks_keyed_" });
  try {
    const path = `${dir}/tasks.sqlite3`;
    await using a = await start(path, "A");
    await using b = await start(path, "B");
    const servers = [a, b];
    const output = new Output();
    const reading = servers.map((script) => output.read(script));

    await t.step(
      '"queue": one at a time per key, in order, 8 keys at once',
      async () => {
        const KEYS = 8;
        const EACH = 6;
        await Promise.all(
          Array.from({ length: KEYS }, async (_, k) => {
            for (let v = 0; v < EACH; v++) {
              const { port } = servers[(k + v) % 2]!;
              assert.equal(
                await post(port, { task: "q", key: `k${k}`, v: String(v) }),
                202,
              );
            }
          }),
        );
        await output.seen(/^end q /, KEYS * EACH);
        const all: { start: number; end: number }[] = [];
        for (let k = 0; k < KEYS; k++) {
          const ran = runs(output.tasks("q", `k${k}`));
          assert.deepEqual(
            ran.map(({ v }) => v),
            Array.from({ length: EACH }, (_, v) => String(v)),
          );
          ran.slice(1).forEach((run, i) =>
            assert.ok(
              run.start >= ran[i]!.end,
              `k${k}: ${run.v} started before ${ran[i]!.v} ended`,
            )
          );
          all.push(...ran);
        }
        // Both servers ran some.
        assert.deepEqual(
          new Set(output.tasks("q").map(({ server }) => server)),
          new Set(["A", "B"]),
        );
        // Other keys ran alongside: some run started before another ended.
        assert.ok(
          all.some((run) =>
            all.some((other) =>
              other !== run && other.start < run.end && run.start < other.end
            )
          ),
          "no two keys ran at once",
        );
      },
    );

    await t.step(
      '"skip": a flood adds nothing while a duplicate waits',
      async () => {
        const before = (await Promise.all(servers.map(({ port }) =>
          stats(port)
        )))
          .map((counts) => counts.deduplicated);
        for (const key of ["f1", "f2"]) {
          assert.equal(await post(a.port, { task: "s", key, v: "hold" }), 202);
          await output.seen(new RegExp(`^start s ${key} hold `));
          // Behind the one running: it waits.
          assert.equal(await post(b.port, { task: "s", key, v: "waits" }), 202);
        }
        const statuses = await Promise.all(
          Array.from({ length: 40 }, (_, i) =>
            post(servers[i % 2]!.port, {
              task: "s",
              key: i < 20 ? "f1" : "f2",
              v: `flood${i}`,
            })),
        );
        assert.ok(statuses.every((status) => status === 202));
        const after = (await Promise.all(servers.map(({ port }) =>
          stats(port)
        )))
          .map((counts) => counts.deduplicated);
        assert.equal(after[0]! + after[1]! - before[0]! - before[1]!, 40);
        for (const { port } of servers) {
          for (const key of ["f1", "f2"]) {
            await post(port, { key }, "/release");
          }
        }
        await output.seen(/^end s f\d waits /, 2);
        for (const key of ["f1", "f2"]) {
          assert.deepEqual(
            runs(output.tasks("s", key)).map(({ v }) => v),
            ["hold", "waits"],
          );
        }
      },
    );

    await t.step(
      '"replace": a burst of 20 with a delay runs once, the last',
      async () => {
        let last = 0;
        for (let i = 0; i < 20; i++) {
          last = Date.now();
          assert.equal(
            await post(servers[i % 2]!.port, {
              task: "r",
              key: "b1",
              v: `${i}`,
            }),
            202,
          );
        }
        await output.seen(/^end r b1 /);
        const ran = runs(output.tasks("r", "b1"));
        assert.deepEqual(ran.map(({ v }) => v), ["19"]);
        assert.ok(
          ran[0]!.start >= last + DELAY_MS,
          `started ${ran[0]!.start - last} ms after the last add`,
        );
        const replaced = output.lines.filter((line) =>
          line.startsWith("deduplicated r ")
        );
        assert.equal(replaced.length, 19);
        assert.equal(
          new Set(replaced.map((line) => line.split(" ")[2])).size,
          19,
        );
      },
    );

    await t.step(
      "a delay: no earlier than its delay after its add",
      async () => {
        const added: number[] = [];
        for (const [i, server] of [b, a].entries()) {
          added.push(Date.now());
          assert.equal(
            await post(server.port, { task: "d", key: "d1", v: `${i}` }),
            202,
          );
        }
        await output.seen(/^end d d1 1 /);
        const ran = runs(output.tasks("d", "d1"));
        assert.deepEqual(ran.map(({ v }) => v), ["0", "1"]);
        ran.forEach((run, i) =>
          assert.ok(
            run.start >= added[i]! + DELAY_MS,
            `${run.v} started ${run.start - added[i]!} ms after its add`,
          )
        );
        assert.ok(ran[1]!.start >= ran[0]!.end);
      },
    );

    for (const script of servers) script.child.kill("SIGTERM");
    const exits = await Promise.all(servers.map((script) => script.exit()));
    await Promise.all(reading);
    assert.deepEqual(
      output.lines.filter((line) => line.startsWith("error ")),
      [],
    );
    for (const { code, stderr } of exits) {
      assert.doesNotMatch(stderr, /database is locked/);
      assert.equal(code, 0, stderr);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

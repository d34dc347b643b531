// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// A server killed with SIGKILL while it runs a keyed task, a duplicate
// waiting behind it stored by a second server on the same Deno KV file: the
// second runs the killed task again once its claim lapses (30 s), without
// waiting for Deno KV's own redelivery (about a minute), then the
// duplicate; and when Deno KV delivers the killed message again, it does
// not run a third time. About 70 s: Deno KV's redelivery is awaited.

import assert from "node:assert/strict";
import { type Script, startScript } from "../_helpers/process.ts";

/**
 * A server on `KV_PATH`, named `LABEL`, whose listener prints each step it
 * handled. `POST /?v=v` adds task `q` for key "u": it prints its start and
 * end, and on server "A" never ends.
 */
const server = `
  import { defineTask, serve } from "@afterward/background-tasks";
  import { kvBackend } from "@afterward/background-tasks/kv";
  const label = Deno.env.get("LABEL");
  const now = () => performance.timeOrigin + performance.now();
  const q = defineTask(async ({ id }, key, v) => {
    console.log(["start", key, v, id, label, now()].join(" "));
    if (label === "A") await new Promise(() => {});
    console.log(["end", key, v, id, label, now()].join(" "));
  }, { name: "q", key: (key) => key });
  const kv = await Deno.openKv(Deno.env.get("KV_PATH"));
  const backend = kvBackend({ kv, tasks: [q], listen: false, redelivery: [1000] });
  kv.listenQueue(async (message) => {
    await backend.handle(message);
    if (message.afterwardStep === 1) {
      console.log(["handled", message.chain, message.index, message.attempt].join(" "));
    }
  });
  serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen({ port }) { console.log(port); },
    backend,
  }, (request, _info, tasks) => {
    tasks.addTask(q, "u", new URL(request.url).searchParams.get("v"));
    return new Response("accepted", { status: 202 });
  });
`;

async function start(
  path: string,
  label: string,
): Promise<Script & { port: number }> {
  const script = await startScript(
    server,
    ["--unstable-kv", "--allow-net=127.0.0.1", "--allow-write", "--allow-env"],
    120_000,
    { KV_PATH: path, LABEL: label },
  );
  return Object.assign(script, { port: Number(await script.nextLine()) });
}

async function add(port: number, v: string): Promise<void> {
  const response = await fetch(`http://127.0.0.1:${port}/?v=${v}`, {
    method: "POST",
  });
  await response.body?.cancel();
  assert.equal(response.status, 202);
}

/** The next line of `script` that matches `pattern`, with the ones before. */
async function until(
  script: Script,
  pattern: RegExp,
  seen: string[],
): Promise<string[]> {
  for (;;) {
    const line = await script.nextLine();
    seen.push(line);
    if (pattern.test(line)) return line.split(" ");
  }
}

Deno.test("a server killed while it runs a keyed task holds its key no longer than its claim, and the task runs again once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "background_tasks_kill_" });
  try {
    const path = `${dir}/tasks.sqlite3`;
    // Both servers are up before the task is stored: the second learns of
    // the messages the first queues only when it next looks (Deno KV looks
    // once a minute), not at its start.
    await using a = await start(path, "A");
    await using b = await start(path, "B");
    await add(a.port, "killed");
    const seenA: string[] = [];
    const [, , , id] = await until(a, /^start u killed /, seenA);
    const chain = id!;
    // Behind the running one, in the other server, which then watches it.
    await add(b.port, "next");
    a.child.kill("SIGKILL");
    await a.child.status;
    const killedAt = Date.now();

    const seen: string[] = [];
    const rerun = await until(b, /^start u killed /, seen);
    assert.equal(rerun[3], id);
    const ranAgainAfter = Number(rerun[5]) - killedAt;
    await until(b, /^end u killed /, seen);
    const next = await until(b, /^start u next /, seen);
    await until(b, /^end u next /, seen);
    // Deno KV delivers the killed message again about a minute after the
    // kill, at the earliest: the claim (30 s) came first.
    assert.ok(
      ranAgainAfter < 55_000,
      `ran again ${ranAgainAfter} ms after the kill`,
    );
    assert.ok(Number(next[5]) - killedAt < 55_000);
    // Deno KV's own delivery of the killed message: handled, not run.
    const handled = new RegExp(`^handled ${chain} 0 1$`);
    while (seen.filter((line) => handled.test(line)).length < 2) {
      seen.push(await b.nextLine());
    }
    b.child.kill("SIGTERM");
    const { code, stdout, stderr } = await b.exit();
    assert.equal(code, 0, stderr);
    const starts = [...seenA, ...stdout].filter((line) =>
      line.startsWith("start u killed ")
    );
    assert.deepEqual(starts.map((line) => line.split(" ").slice(3, 5)), [
      [id, "A"],
      [id, "B"],
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

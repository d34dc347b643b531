// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The KV backend's crash test: kill the server with SIGKILL in the middle of
// a chain, start it again on the same database, and the chain completes.
// Deno KV delivers an unfinished message again only after about a minute,
// so the test runs only when asked: KV_CRASH_TEST=1 deno task test

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const example = fileURLToPath(
  new URL("../../examples/durable_kv.ts", import.meta.url),
);

function start(cwd: string): {
  child: Deno.ChildProcess;
  lines: AsyncIterator<string>;
} {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--unstable-kv",
      "--allow-net=127.0.0.1",
      "--allow-env=PORT,KV_PATH,STEP_MS",
      "--allow-read=tasks.sqlite3",
      "--allow-write=tasks.sqlite3",
      example,
    ],
    cwd,
    env: { PORT: "0", STEP_MS: "1000", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout
    .pipeThrough(new TextDecoderStream())
    .pipeThrough(
      new TransformStream<string, string>({
        transform(chunk, controller) {
          for (const line of chunk.split("\n")) {
            if (line) controller.enqueue(line);
          }
        },
      }),
    )[Symbol.asyncIterator]();
  return { child, lines };
}

async function until(
  lines: AsyncIterator<string>,
  pattern: RegExp,
  seen: string[],
): Promise<RegExpExecArray> {
  for (;;) {
    const { value, done } = await lines.next();
    assert.ok(!done, `the server stopped before printing ${pattern}`);
    seen.push(value);
    const match = pattern.exec(value);
    if (match) return match;
  }
}

Deno.test({
  name:
    "examples/durable_kv.ts completes a chain after a SIGKILL and a restart",
  ignore: Deno.env.get("KV_CRASH_TEST") !== "1",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const cwd = await Deno.makeTempDir({ prefix: "background_tasks_crash_" });
  const seen: string[] = [];
  try {
    const first = start(cwd);
    const [, url] = await until(
      first.lines,
      /^Listening on (http:\/\/127\.0\.0\.1:\d+)\//,
      seen,
    );
    const response = await fetch(`${url}/orders/42`, { method: "POST" });
    assert.equal(response.status, 202);
    await response.body?.cancel();
    const [, id] = await until(first.lines, /^started chargeCard (\S+)$/, seen);
    first.child.kill("SIGKILL");
    await first.child.status;
    const killedAt = performance.now();

    const second = start(cwd);
    await until(second.lines, /^Listening on /, seen);
    await until(second.lines, new RegExp(`^finished shipOrder `), seen);
    const waited = (performance.now() - killedAt) / 1000;
    second.child.kill("SIGTERM");
    await second.child.status;

    const events = seen.filter((line) =>
      !line.startsWith("Listening") && !line.startsWith("Try it")
    );
    const chain = id!.slice(0, id!.lastIndexOf(":"));
    assert.deepEqual(events, [
      `finished reserveStock ${chain}:0`,
      `started chargeCard ${chain}:1`,
      // Killed here; delivered again after the restart, with the same id.
      `started chargeCard ${chain}:1`,
      `finished chargeCard ${chain}:1`,
      `finished shipOrder ${chain}:2`,
    ]);
    console.log(`the chain completed ${waited.toFixed(1)} s after the SIGKILL`);
  } finally {
    await Deno.remove(cwd, { recursive: true });
  }
});

// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// `deno test --doc` checks each JSDoc snippet with an import of every export
// of its module added on top, which the snippet, importing the package by
// name, leaves unused: under noUnusedLocals that fails. So the tests run with
// deno.test.json, which is deno.json without the two flags that forbid unused
// names; `deno check .` still applies every flag to the code.

import assert from "node:assert/strict";
import config from "../deno.json" with { type: "json" };
import testConfig from "../deno.test.json" with { type: "json" };

Deno.test("deno.test.json is deno.json, but for the flags JSDoc snippets cannot meet", () => {
  const {
    noUnusedLocals,
    noUnusedParameters,
    ...compilerOptions
  } = config.compilerOptions;
  assert.deepEqual([noUnusedLocals, noUnusedParameters], [true, true]);
  assert.deepEqual(testConfig, {
    name: config.name,
    version: config.version,
    exports: config.exports,
    compilerOptions,
    unstable: config.unstable,
    lock: { path: "./deno.lock" },
  });
});

Deno.test("deno.json loads no lockfile unless asked, so a run that needs no npm package fetches none", () => {
  assert.equal(config.lock, false);
  for (const [name, task] of Object.entries(config.tasks)) {
    const usesNpm = /bullmq|worker|bench:http|bench:workers/.test(name) ||
      task.includes("distributed/");
    if (usesNpm) assert.match(task, /--lock=deno\.lock/, name);
  }
});

Deno.test("without Redis, the test run says once which tests it skips and how to run them", async () => {
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      "--config=deno.test.json",
      `await import(${
        JSON.stringify(new URL("./_redis.ts", import.meta.url).href)
      }); await import(${
        JSON.stringify(new URL("./_redis.ts", import.meta.url).href)
      });`,
    ],
    cwd: new URL("..", import.meta.url),
    // A PATH without redis-server, and no REDIS_PORT.
    env: { PATH: "/nonexistent", NO_COLOR: "1" },
    clearEnv: true,
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(stderr);
  assert.equal(code, 0, text);
  assert.equal(text.match(/Skipping/g)?.length, 1, text);
  assert.match(
    text,
    /Skipping the BullMQ backend's tests .*install redis-server.*REDIS_PORT/,
  );
});

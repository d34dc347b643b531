// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// `deno test --doc` checks each JSDoc snippet with an import of every export
// of its module added on top, which the snippet, importing the package by
// name, leaves unused: under noUnusedLocals that fails. So the tests run with
// deno.test.json, which is deno.json without the two flags that forbid unused
// names; `deno check .` still applies every flag to the code.

import assert from "node:assert/strict";
import config from "../../deno.json" with { type: "json" };
import testConfig from "../../deno.test.json" with { type: "json" };

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

Deno.test("deno.json pins the npm packages in deno.lock, and a run that needs none fetches none", async () => {
  // The lockfile holds BullMQ resolved with its optional peers (ioredis,
  // pg): without it, a program that imports npm:bullmq alone, as a
  // benchmark of raw BullMQ does, finds no ioredis.
  assert.deepEqual(config.lock, { path: "./deno.lock" });
  const cache = await Deno.makeTempDir();
  const dir = await Deno.makeTempDir();
  try {
    const script = `${dir}/main.ts`;
    await Deno.writeTextFile(
      script,
      `import ${
        JSON.stringify(new URL("../../mod.ts", import.meta.url).href)
      }; console.log("loaded");`,
    );
    const { code, stdout } = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        `--config=${new URL("../../deno.json", import.meta.url).pathname}`,
        script,
      ],
      env: { DENO_DIR: cache, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "null",
    }).output();
    assert.equal(code, 0);
    assert.equal(new TextDecoder().decode(stdout), "loaded\n");
    // Deno makes the npm cache's folder, and leaves it empty.
    const fetched: string[] = [];
    try {
      for await (const entry of Deno.readDir(`${cache}/npm`)) {
        fetched.push(entry.name);
      }
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
    assert.deepEqual(fetched, []);
  } finally {
    await Deno.remove(cache, { recursive: true });
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("without Redis, the test run says once which tests it skips and how to run them", async () => {
  // Two test files that need Redis, each evaluating tests/_helpers/redis.ts in an
  // isolate of its own; the filter runs none of their tests.
  const { code, stdout } = await new Deno.Command(Deno.execPath(), {
    args: [
      "test",
      "--config=deno.test.json",
      "--no-check",
      "--allow-env",
      "--allow-run",
      "--allow-net=127.0.0.1",
      "--allow-read",
      "--filter=no test has this name",
      "tests/bullmq/bullmq_backend_test.ts",
      "tests/suites/durability_test.ts",
    ],
    cwd: new URL("../..", import.meta.url),
    // A PATH with Deno and no redis-server, and no REDIS_PORT.
    env: { PATH: "/nonexistent", NO_COLOR: "1", HOME: Deno.env.get("HOME")! },
    clearEnv: true,
    stdout: "piped",
  }).output();
  // deno test shows what a module printed as it loaded on standard output.
  const text = new TextDecoder().decode(stdout);
  assert.equal(code, 0, text);
  assert.equal(text.match(/Skipping/g)?.length, 1, text);
  assert.match(
    text,
    /Skipping the BullMQ backend's tests .*install redis-server.*REDIS_PORT/,
  );
});

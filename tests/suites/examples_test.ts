// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Runs each example as a user would, with `deno run` in a directory of its
// own, then stops it with SIGTERM so that it drains its tasks before exiting.

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import denoJson from "../../deno.json" with { type: "json" };
import { redisAvailable, startRedis } from "../_helpers/redis.ts";
import { postgresAvailable, startPostgres } from "../_helpers/postgres.ts";

const examples = new URL("../../examples/", import.meta.url);

/**
 * The permission flags of a `deno task` that runs an example, so that the
 * tests run it exactly as the task does.
 */
function taskFlags(
  task: keyof typeof denoJson.tasks,
  script: string,
): string[] {
  const [deno, run, ...rest] = denoJson.tasks[task].split(" ");
  assert.deepEqual([deno, run, rest.at(-1)], ["deno", "run", script]);
  return rest.slice(0, -1);
}

/** A running example, started with the permissions its header documents. */
class Example {
  readonly url: string;
  readonly cwd: string;
  #child: Deno.ChildProcess;
  #stdout: AsyncIterator<string>;
  #stderr: AsyncIterator<string>;

  private constructor(
    child: Deno.ChildProcess,
    stdout: AsyncIterator<string>,
    stderr: AsyncIterator<string>,
    url: string,
    cwd: string,
  ) {
    this.#child = child;
    this.#stdout = stdout;
    this.#stderr = stderr;
    this.url = url;
    this.cwd = cwd;
  }

  static async start(
    name: string,
    permissions: string[],
    env: Record<string, string> = {},
  ): Promise<Example> {
    const cwd = await Deno.makeTempDir({ prefix: "background_tasks_example_" });
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", ...permissions, fileURLToPath(new URL(name, examples))],
      cwd,
      env: { PORT: "0", NO_COLOR: "1", ...env },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stdout = lines(child.stdout);
    const stderr = lines(child.stderr);
    const listening = await stdout.next();
    const url = /^Listening on (http:\/\/127\.0\.0\.1:\d+)\//.exec(
      listening.value ?? "",
    )?.[1];
    assert.ok(url, `unexpected first line: ${listening.value}`);
    const tryIt = await stdout.next();
    assert.match(tryIt.value ?? "", new RegExp(`^Try it: curl .*${url}/`));
    return new Example(child, stdout, stderr, url, cwd);
  }

  /** The next line the example prints on stdout. */
  async nextLine(): Promise<string> {
    const { value, done } = await this.#stdout.next();
    assert.ok(!done, "the example closed its output");
    return value;
  }

  /**
   * Sends SIGTERM and resolves once the example has drained and exited, with
   * its exit code and what it still wrote to stderr.
   */
  async stop(): Promise<{ code: number; stderr: string[] }> {
    this.#child.kill("SIGTERM");
    const [stderr] = await Promise.all([
      rest(this.#stderr),
      rest(this.#stdout),
    ]);
    const { code } = await this.#child.status;
    // Deno says so on stderr when it fetches a package the cache lacks (a
    // fresh machine's first run): its words, not the example's.
    return { code, stderr: stderr.filter((line) => !/^Download /.test(line)) };
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await this.#child.status;
    await Promise.all([rest(this.#stderr), rest(this.#stdout)]);
    await Deno.remove(this.cwd, { recursive: true });
  }
}

function lines(stream: ReadableStream<Uint8Array>): AsyncIterator<string> {
  return stream
    .pipeThrough(new TextDecoderStream())
    .pipeThrough(lineSplitter())[Symbol.asyncIterator]();
}

async function rest(iterator: AsyncIterator<string>): Promise<string[]> {
  const collected: string[] = [];
  for (let line = await iterator.next(); !line.done;) {
    collected.push(line.value);
    line = await iterator.next();
  }
  return collected;
}

function lineSplitter(): TransformStream<string, string> {
  let buffer = "";
  return new TransformStream({
    transform(chunk, controller) {
      buffer += chunk;
      const lines = buffer.split("\n");
      buffer = lines.pop()!;
      for (const line of lines) controller.enqueue(line);
    },
    flush(controller) {
      if (buffer) controller.enqueue(buffer);
    },
  });
}

/** What an example prints and returns once SIGTERM has drained `completed` tasks. */
function drained(succeeded: number): { code: number; stderr: string[] } {
  return {
    code: 0,
    stderr: [
      `Shutdown drained every background task: ${succeeded} succeeded and 0 failed while draining`,
    ],
  };
}

/**
 * Asserts a clean exit after SIGTERM. Fast tasks may finish before the signal
 * arrives or while draining, so only failures and abandonment are counted.
 */
function assertDrained(stopped: { code: number; stderr: string[] }): void {
  assert.equal(stopped.code, 0);
  assert.equal(stopped.stderr.length, 1);
  assert.match(
    stopped.stderr[0]!,
    /^Shutdown drained every background task: \d+ succeeded and 0 failed while draining$/,
  );
}

const writeLog = [
  "--allow-net=127.0.0.1",
  "--allow-env=PORT",
  "--allow-write=log.txt",
];

Deno.test("examples/send_notification.ts writes the notification after responding, under `deno task example`", async () => {
  await using example = await Example.start(
    "send_notification.ts",
    taskFlags("example", "examples/send_notification.ts"),
  );
  const response = await fetch(
    `${example.url}/send-notification/johndoe@example.com`,
    { method: "POST" },
  );
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), {
    message: "Notification sent in the background",
  });
  const missing = await fetch(`${example.url}/send-notification/x`);
  assert.equal(missing.status, 404);
  await missing.body?.cancel();

  assertDrained(await example.stop());
  assert.equal(
    await Deno.readTextFile(`${example.cwd}/log.txt`),
    "notification for johndoe@example.com: some notification",
  );
});

Deno.test("examples/dependency_injection.ts logs the helper's task, then the handler's", async (t) => {
  const table: [string, string][] = [
    ["?q=hello", "found query: hello\nmessage to johndoe@example.com\n"],
    ["", "message to johndoe@example.com\n"],
  ];
  for (const [query, logged] of table) {
    await t.step(query || "no query", async () => {
      await using example = await Example.start(
        "dependency_injection.ts",
        writeLog,
      );
      const response = await fetch(
        `${example.url}/send-notification/johndoe@example.com${query}`,
        { method: "POST" },
      );
      assert.deepEqual(await response.json(), { message: "Message sent" });
      assertDrained(await example.stop());
      assert.equal(await Deno.readTextFile(`${example.cwd}/log.txt`), logged);
    });
  }
});

Deno.test("examples/accepted_processing.ts accepts a file at once and processes it afterwards", async () => {
  await using example = await Example.start("accepted_processing.ts", [
    "--allow-net=127.0.0.1",
    "--allow-env=PORT",
  ]);
  const file = "one two three\nfour five\n";
  const accepted = await fetch(`${example.url}/files`, {
    method: "POST",
    body: file,
  });
  assert.equal(accepted.status, 202);
  const { id, status } = await accepted.json();
  assert.equal(status, "processing");
  assert.equal(accepted.headers.get("location"), `/files/${id}`);

  assert.equal(await example.nextLine(), `processed ${id}: 3 lines, 5 words`);
  const done = await fetch(`${example.url}/files/${id}`);
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(file)),
  );
  assert.deepEqual(await done.json(), {
    id,
    status: "done",
    report: {
      bytes: 24,
      lines: 3,
      words: 5,
      sha256: Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join(
        "",
      ),
    },
  });
  const unknown = await fetch(`${example.url}/files/nope`);
  assert.equal(unknown.status, 404);
  await unknown.body?.cancel();
  assertDrained(await example.stop());
});

Deno.test("examples/demo.ts prints the response sent before the tasks, then cleans up, under `deno task demo`", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "background_tasks_demo_test_" });
  try {
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        ...taskFlags("demo", "examples/demo.ts"),
        fileURLToPath(new URL("demo.ts", examples)),
      ],
      env: { TMPDIR: tmp, NO_COLOR: "1" },
    }).output();
    assert.equal(new TextDecoder().decode(stderr), "");
    assert.equal(code, 0);
    const output = new TextDecoder().decode(stdout);
    const events = [...output.matchAll(/^ *[\d.]+ ms {2}(.*?)(?::| \(|$)/gm)]
      .map((match) => match[1]!.trim());
    // The client runs in the same process: it may read the response before
    // or after the quick task, but the server sent it before either task.
    assert.deepEqual(events.filter((event) => event !== "response received"), [
      "request sent",
      "response sent by the server",
      "task writeNotification finished",
      "task sendWelcomeEmail finished",
    ]);
    assert.ok(
      events.indexOf("response received") >
        events.indexOf("response sent by the server"),
    );
    assert.match(
      output,
      /^log\.txt: notification for johndoe@example\.com: some notification$/m,
    );
    assert.deepEqual(await Array.fromAsync(Deno.readDir(tmp)), []);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("examples/tracing.ts prints a request and its tasks in one trace, under `deno task example:tracing`", async () => {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...taskFlags("example:tracing", "examples/tracing.ts"),
      fileURLToPath(new URL("tracing.ts", examples)),
    ],
    env: { NO_COLOR: "1" },
  }).output();
  assert.equal(new TextDecoder().decode(stderr), "");
  assert.equal(code, 0);
  const output = new TextDecoder().decode(stdout);
  // The tree without its times: the request's span, its tasks' spans under
  // it, and each attempt's fetch under the attempt.
  const tree = output.split("\n").slice(3).filter((line) => line !== "")
    .map((line) => line.replace(/ {2}\+[\d.]+ ms, [\d.]+ ms/, ""));
  assert.deepEqual(tree, [
    "POST /orders/42  status_code=202",
    "├─ task saveOrder  attempt=1 outcome=succeeded",
    '├─ task notifyWarehouse  attempt=1 outcome=failed will_retry=true error "warehouse answered 503"',
    '│  └─ POST /warehouse  status_code=503 error "Service Unavailable"',
    "│     └─ POST /warehouse  status_code=503 error",
    "└─ task notifyWarehouse  attempt=2 outcome=succeeded",
    "   └─ POST /warehouse  status_code=204",
    "      └─ POST /warehouse  status_code=204",
  ]);
  assert.match(
    output,
    /^POST \/orders\/42 answered 202\n\ntrace [0-9a-f]{32}\n/,
  );
});

const jobs = [
  "--allow-net=127.0.0.1",
  "--allow-env=PORT,SHUTDOWN_TIMEOUT",
  "--allow-write=jobs.log",
];

async function postJobs(example: Example, count: number): Promise<void> {
  const statuses = await Promise.all(
    Array.from({ length: count }, async (_, id) => {
      const response = await fetch(`${example.url}/jobs/${id}`, {
        method: "POST",
      });
      await response.body?.cancel();
      return response.status;
    }),
  );
  assert.deepEqual(statuses, Array(count).fill(202));
}

Deno.test("examples/graceful_shutdown.ts finishes every job on SIGTERM and exits 0", async () => {
  await using example = await Example.start("graceful_shutdown.ts", jobs);
  await postJobs(example, 5);
  assert.deepEqual(await example.stop(), drained(5));
  const done = (await Deno.readTextFile(`${example.cwd}/jobs.log`))
    .trim().split("\n").sort();
  assert.deepEqual(done, [0, 1, 2, 3, 4].map((id) => `job ${id} done`));
});

Deno.test("examples/graceful_shutdown.ts names the jobs it abandons at the deadline and exits 1", async () => {
  await using example = await Example.start("graceful_shutdown.ts", jobs, {
    SHUTDOWN_TIMEOUT: "50",
  });
  await postJobs(example, 3);
  assert.deepEqual(await example.stop(), {
    code: 1,
    stderr: [
      "Shutdown abandoned 3 background tasks (processJob: 3); 0 succeeded and 0 failed while draining",
    ],
  });
  const log = await Deno.readTextFile(`${example.cwd}/jobs.log`).catch(() =>
    ""
  );
  assert.equal(log, "");
});

Deno.test("examples/backpressure.ts answers 503 with Retry-After beyond maxPending", async () => {
  await using example = await Example.start("backpressure.ts", [
    "--allow-net=127.0.0.1",
    "--allow-env=PORT",
  ]);
  const responses = await Promise.all(
    Array.from({ length: 6 }, async () => {
      const response = await fetch(`${example.url}/reports`, {
        method: "POST",
      });
      await response.body?.cancel();
      return [response.status, response.headers.get("retry-after")];
    }),
  );
  assert.deepEqual(
    responses.map(String).sort(),
    ["202,", "202,", "202,", "202,", "503,5", "503,5"],
  );
  assert.deepEqual(await example.stop(), drained(4));
});

Deno.test("examples/observability.ts logs one line per attempt and serves the stats", async () => {
  await using example = await Example.start("observability.ts", [
    "--allow-net=127.0.0.1",
    "--allow-env=PORT",
  ]);
  const created = await fetch(`${example.url}/orders`, { method: "POST" });
  assert.deepEqual(await created.json(), { order: 1 });
  const lines = [];
  for (let i = 0; i < 4; i++) lines.push(await example.nextLine());
  assert.deepEqual(
    lines.map((line) => line.replace(/ in [\d.]+ ms/, " in N ms")),
    [
      "task sendConfirmation attempt 1: succeeded in N ms",
      "task chargeCard attempt 1: failed in N ms (card network busy for order 1), will retry",
      "task chargeCard attempt 2: succeeded in N ms",
      "task updateAnalytics attempt 1: timedOut in N ms " +
      '(Background task "updateAnalytics" timed out after 100 ms)',
    ],
  );
  const stats = await fetch(`${example.url}/stats`);
  assert.deepEqual(await stats.json(), {
    pending: 0,
    queued: 0,
    running: 0,
    succeeded: 2,
    failed: 1,
    timedOut: 1,
    storing: 0,
    retried: 1,
    refused: 0,
    discarded: 0,
    skipped: 0,
    deduplicated: 0,
    abandoned: 0,
    handedOver: 0,
  });
  assert.equal((await example.stop()).code, 0);
});

const config = `--config=${
  fileURLToPath(new URL("../../deno.json", import.meta.url))
}`;

Deno.test("examples/hono.ts runs c.var tasks and c.executionCtx.waitUntil, and drains both", async () => {
  await using example = await Example.start("hono.ts", [
    config,
    "--allow-net=127.0.0.1",
    "--allow-env=PORT",
    "--allow-write=log.txt",
  ]);
  const response = await fetch(
    `${example.url}/send-notification/johndoe@example.com`,
    { method: "POST" },
  );
  assert.deepEqual(await response.json(), {
    message: "Notification sent in the background",
  });
  assertDrained(await example.stop());
  // waitUntil() tracks work that has already started: no order between them.
  const log = await Deno.readTextFile(`${example.cwd}/log.txt`);
  assert.deepEqual(log.trim().split("\n").sort(), [
    "cache warmed for johndoe@example.com",
    "notification for johndoe@example.com: some notification",
  ]);
});

Deno.test("examples/deno_serve.ts under deno serve finishes its tasks after SIGTERM", async () => {
  const cwd = await Deno.makeTempDir({ prefix: "background_tasks_serve_" });
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "serve",
      "--host=127.0.0.1",
      "--port=0",
      "--allow-write=log.txt",
      fileURLToPath(new URL("deno_serve.ts", examples)),
    ],
    cwd,
    env: { NO_COLOR: "1" },
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = lines(child.stderr);
  try {
    const listening = await stderr.next();
    const url = /Listening on (http:\/\/127\.0\.0\.1:\d+)\//.exec(
      listening.value ?? "",
    )?.[1];
    assert.ok(url, `unexpected first line: ${listening.value}`);
    const statuses = await Promise.all(["a", "b"].map(async (who) => {
      const response = await fetch(
        `${url}/send-notification/${who}@example.com`,
        { method: "POST" },
      );
      await response.body?.cancel();
      return response.status;
    }));
    assert.deepEqual(statuses, [200, 200]);
    // The tasks take 200 ms; the signal arrives while they wait.
    child.kill("SIGTERM");
    const { code } = await child.status;
    assert.deepEqual(await rest(stderr), []);
    assert.equal(code, 0);
    const log = (await Deno.readTextFile(`${cwd}/log.txt`)).trim().split("\n");
    assert.deepEqual(log.sort(), [
      "notification for a@example.com: some notification",
      "notification for b@example.com: some notification",
    ]);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await child.status;
    await rest(stderr);
    await Deno.remove(cwd, { recursive: true });
  }
});

Deno.test("examples/durable_kv.ts queues an order's chain in Deno KV and runs it in order", async () => {
  await using example = await Example.start("durable_kv.ts", [
    "--unstable-kv",
    "--allow-net=127.0.0.1",
    "--allow-env=PORT,KV_PATH,STEP_MS",
    "--allow-read=tasks.sqlite3",
    "--allow-write=tasks.sqlite3",
  ], { STEP_MS: "10" });
  const response = await fetch(`${example.url}/orders/42`, { method: "POST" });
  assert.equal(response.status, 202);
  assert.deepEqual(await response.json(), { order: "42", status: "accepted" });
  const lines = [];
  for (let i = 0; i < 4; i++) lines.push(await example.nextLine());
  const chain = lines[0]!.split(" ")[2]!.split(":")[0];
  assert.deepEqual(lines, [
    `finished reserveStock ${chain}:0`,
    `started chargeCard ${chain}:1`,
    `finished chargeCard ${chain}:1`,
    `finished shipOrder ${chain}:2`,
  ]);
  assertDrained(await example.stop());
  assert.ok((await Deno.stat(`${example.cwd}/tasks.sqlite3`)).isFile);
});

Deno.test("examples/in_process_and_durable.ts sends /signup's mail from this process and stores /orders' chain in Deno KV, in one serve() whose shutdown drains both", async () => {
  await using example = await Example.start("in_process_and_durable.ts", [
    "--unstable-kv",
    "--allow-net=127.0.0.1",
    "--allow-env=PORT,KV_PATH",
    "--allow-read=tasks.sqlite3",
    "--allow-write=tasks.sqlite3",
  ]);
  const signup = await fetch(`${example.url}/signup`, {
    method: "POST",
    body: "ada@example.com",
  });
  assert.equal(signup.status, 201);
  assert.deepEqual(await signup.json(), {
    email: "ada@example.com",
    status: "signed up",
  });
  const order = await fetch(`${example.url}/orders/42`, { method: "POST" });
  assert.equal(order.status, 202);
  assert.deepEqual(await order.json(), { order: "42", status: "accepted" });
  const lines = [];
  for (let i = 0; i < 3; i++) lines.push(await example.nextLine());
  // The mail and the order's chain run apart: only the chain keeps its order.
  const durable = lines.filter((line) => !line.startsWith("welcomed"));
  const chain = /\(([\w-]+):0\)$/.exec(durable[0] ?? "")?.[1];
  assert.deepEqual(durable, [
    `charged order 42 (${chain}:0)`,
    `shipped order 42 (${chain}:1)`,
  ]);
  assert.ok(lines.includes("welcomed ada@example.com"), lines.join("\n"));
  assertDrained(await example.stop());
});

/**
 * examples/distributed, web process and worker, on the datastore at `url`,
 * as `deno task worker` and the web process's header run them: a signup's
 * three tasks run in order on the worker.
 */
async function runDistributed(url: string): Promise<void> {
  const root = fileURLToPath(new URL("../../", import.meta.url));
  const env = { BULLMQ_URL: url, QUEUE: `example-${crypto.randomUUID()}` };
  const flags = taskFlags("worker", "examples/distributed/worker.ts")
    .map((flag) =>
      flag === "--lock=deno.lock" ? `--lock=${root}deno.lock` : flag
    );
  await using web = await Example.start("distributed/web.ts", flags, env);
  const worker = new Deno.Command(Deno.execPath(), {
    args: ["run", ...flags, `${root}examples/distributed/worker.ts`],
    env: { NO_COLOR: "1", WORK_MS: "5", ...env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = lines(worker.stdout);
  const errors = rest(lines(worker.stderr));
  try {
    assert.match((await output.next()).value ?? "", /^worker \d+ ready$/);
    const response = await fetch(`${web.url}/signup/ada@example.com`, {
      method: "POST",
    });
    assert.equal(response.status, 202);
    assert.deepEqual(await response.json(), {
      email: "ada@example.com",
      status: "accepted",
    });
    const said: string[] = [];
    for (let i = 0; i < 6; i++) said.push((await output.next()).value ?? "");
    const chain = said[0]!.split(" ")[2]!.split(":")[0];
    assert.deepEqual(
      said.map((line) => line.split(" ").slice(0, 5).join(" ")),
      [
        `started sendWelcomeEmail ${chain}:0 attempt 1`,
        `succeeded sendWelcomeEmail ${chain}:0 attempt 1`,
        `started createAvatar ${chain}:1 attempt 1`,
        `succeeded createAvatar ${chain}:1 attempt 1`,
        `started notifyTeam ${chain}:2 attempt 1`,
        `succeeded notifyTeam ${chain}:2 attempt 1`,
      ],
    );
  } finally {
    worker.kill("SIGTERM");
    assert.equal((await worker.status).code, 0);
    await rest(output);
    assert.deepEqual(
      (await errors).filter((line) => !/^Download /.test(line)),
      [],
    );
  }
  assertDrained(await web.stop());
}

Deno.test({
  name:
    "examples/distributed runs a signup's tasks on a worker, in order, on Redis",
  ignore: !redisAvailable,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  await using redis = await startRedis();
  await runDistributed(`redis://127.0.0.1:${redis.port}`);
});

Deno.test({
  name:
    "examples/distributed runs a signup's tasks on a worker, in order, on PostgreSQL, by its BULLMQ_URL alone",
  ignore: !postgresAvailable,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  await using server = await startPostgres();
  await runDistributed(server.url);
});

Deno.test("what the examples write in a clone is ignored by git", async () => {
  const written = new Set<string>();
  for await (const entry of Deno.readDir(examples)) {
    if (!entry.name.endsWith(".ts")) continue;
    const source = await Deno.readTextFile(new URL(entry.name, examples));
    for (const [, file] of source.matchAll(/--allow-write=([\w.]+)/g)) {
      if (file !== ".") written.add(file!);
    }
  }
  written.add("tasks.sqlite3");
  written.add("tasks.sqlite3-wal");
  assert.deepEqual([...written].sort(), [
    "jobs.log",
    "log.txt",
    "tasks.sqlite3",
    "tasks.sqlite3-wal",
  ]);
  // The patterns of .gitignore that name files of the repository's root.
  const patterns = (await Deno.readTextFile(new URL("../.gitignore", examples)))
    .split("\n")
    .filter((line) => line !== "" && !line.startsWith("#"));
  const ignored = (file: string) =>
    patterns.some((pattern) =>
      pattern.endsWith("*")
        ? file.startsWith(pattern.slice(0, -1))
        : file === pattern
    );
  assert.deepEqual([...written].filter((file) => !ignored(file)), []);
});

Deno.test("examples/keyed_burst.ts collapses a burst of 20 updates of one user into one reindex, with the last version", async () => {
  await using example = await Example.start("keyed_burst.ts", [
    "--allow-net=127.0.0.1",
    "--allow-env=PORT",
  ]);
  for (let version = 1; version <= 20; version++) {
    const response = await fetch(`${example.url}/users/u42`, { method: "PUT" });
    assert.deepEqual(await response.json(), { userId: "u42", version });
  }
  const other = await fetch(`${example.url}/users/u7`, { method: "PUT" });
  await other.body?.cancel();
  const lines = [await example.nextLine(), await example.nextLine()];
  assert.deepEqual(lines.toSorted(), [
    "reindexed u42 at version 20",
    "reindexed u7 at version 1",
  ]);
  const stats = await fetch(`${example.url}/stats`);
  assert.deepEqual(await stats.json(), {
    succeeded: 2,
    deduplicated: 19,
    pending: 0,
  });
  assert.deepEqual(await example.stop(), drained(0));
});

// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The BullMQ backend and workers on PostgreSQL, against a private server:
// chains in order, retries and failed tasks; BullMQ's schema made by
// whichever side starts first, or by a separate step; the options that mean
// nothing there refused; a pool the caller owns left open; the names a
// worker lacks said at start; a password never in a message.

import assert from "node:assert/strict";
import pg from "npm:pg@^8";
import { runMigrations } from "npm:bullmq@^6";
import {
  type BackendStatus,
  type DefinedTask,
  defineTask,
  type TaskInfo,
  withBackgroundTasks,
} from "../../mod.ts";
import { bullmqBackend, bullmqWorker } from "../../bullmq.ts";
import { callHandler } from "../../testing.ts";
import { consoleLines, within } from "../_helpers/common.ts";
import { postgresTest, startPostgres } from "../_helpers/postgres.ts";

/** Rows of `sql`, run as the server's superuser. */
async function query<T>(
  url: string,
  sql: string,
  params: unknown[] = [],
): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query(sql, params)).rows as T[];
  } finally {
    await client.end();
  }
}

Deno.test({
  ...postgresTest,
  name:
    "bullmqBackend() on PostgreSQL runs a chain in order on a worker, retries, and keeps failed tasks, on a database the worker prepared",
}, async () => {
  await using server = await startPostgres();
  const connection = server.url;
  const queue = `test-${crypto.randomUUID()}`;
  const ran: string[] = [];
  const finished = Promise.withResolvers<void>();
  let healthy = false;
  const rerun = Promise.withResolvers<void>();
  const record = defineTask(({ id }, label: string) => {
    ran.push(`${label} ${id.slice(id.lastIndexOf(":"))}`);
    if (label === "last") finished.resolve();
  }, { name: "record" });
  const flaky = defineTask(({ attempt }) => {
    ran.push(`flaky attempt ${attempt}`);
    if (attempt === 1) throw new Error("once");
  }, { name: "flaky", retry: { maxAttempts: 2, minDelay: 10, maxDelay: 10 } });
  const failing = defineTask(({ attempt }, order: string) => {
    ran.push(`failing attempt ${attempt}`);
    if (!healthy) throw new Error(`declined ${order}`);
    rerun.resolve();
  }, {
    name: "failing",
    retry: { maxAttempts: 2, minDelay: 10, maxDelay: 10 },
  });
  const tasks = [record, flaky, failing];
  const reported: TaskInfo[] = [];
  using output = consoleLines();
  // The worker starts first, on an empty database: it makes BullMQ's
  // schema, which the backend then finds.
  const worker = bullmqWorker({
    connection,
    queue,
    tasks,
    onTaskError: (_error, info) => void reported.push(info),
  });
  const schema = async () =>
    (await query<{ name: string }>(
      server.url,
      "SELECT nspname AS name FROM pg_namespace WHERE nspname = 'bullmq'",
    )).length;
  // The worker tells nobody when it made the schema: the database is asked
  // until it has it.
  while (await schema() === 0) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const backend = bullmqBackend({ connection, queue, tasks });
  try {
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(record, "first");
      tasks.addTask(flaky);
      tasks.addTask(failing, "order-9");
      tasks.addTask(record, "last");
      return new Response("ok");
    }, { backend });
    await (await callHandler(handler, "/pay?token=x")).tasks;
    assert.equal(handler.stats.handedOver, 4);
    await finished.promise;
    assert.deepEqual(ran, [
      "first :0",
      "flaky attempt 1",
      "flaky attempt 2",
      "failing attempt 1",
      "failing attempt 2",
      "last :3",
    ]);
    assert.deepEqual(reported.map((info) => [info.name, info.attempt]), [
      ["failing", 2],
    ]);
    const [failed, ...others] = await backend.failed();
    assert.deepEqual(others, []);
    assert.equal(failed?.name, "failing");
    assert.deepEqual(failed?.args, ["order-9"]);
    assert.equal(failed?.attempts, 2);
    assert.match(failed!.error, /^Error: declined order-9\n\s+at /);
    assert.equal(failed?.id, reported[0]?.id);
    assert.deepEqual(failed?.request, {
      method: "GET",
      url: "http://localhost/pay?token=x",
    });
    healthy = true;
    assert.equal(failed?.jobId, failed?.id.replace(":", "."));
    assert.equal(await backend.retry(failed!.id), true);
    await rerun.promise;
    assert.equal(ran.at(-1), "failing attempt 1");
    assert.equal(await backend.retry("no-such-job"), false);
    assert.equal(backend.status.state, "up");
  } finally {
    await worker.close();
    await backend.close();
  }
  // Nothing said: PostgreSQL was there throughout.
  assert.deepEqual(output.lines, []);
});

Deno.test({
  ...postgresTest,
  name:
    "bullmqBackend() on PostgreSQL answers once the chain is stored (before the response, by default), and makes BullMQ's schema when it starts first",
}, async () => {
  await using server = await startPostgres();
  const queue = `test-${crypto.randomUUID()}`;
  const step = defineTask(() => {}, { name: "step" });
  const backend = bullmqBackend({
    connection: server.url,
    queue,
    tasks: [step],
  });
  try {
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(step);
      tasks.addTask(step);
      tasks.addTask(step);
      tasks.addTask(step);
      return new Response("accepted", { status: 202 });
    }, { backend });
    for (const path of ["/a", "/b"]) {
      const { response } = await callHandler(handler, path);
      await response.body?.cancel();
    }
    // No worker: the two chains' jobs are in PostgreSQL by the time their
    // responses came back.
    const [{ count }] = await query<{ count: string }>(
      server.url,
      "SELECT count(*) AS count FROM bullmq.job WHERE queue = $1",
      [queue],
    ) as [{ count: string }];
    assert.equal(count, "8");
  } finally {
    await backend.close();
  }
});

Deno.test({
  ...postgresTest,
  name:
    "bullmqBackend() on PostgreSQL stores a one-task chain with the chain's id as its deduplication key, and deletes the key once the store is answered",
}, async () => {
  await using server = await startPostgres();
  const queue = `test-${crypto.randomUUID()}`;
  const step = defineTask(() => {}, { name: "step" });
  const backend = bullmqBackend({
    connection: server.url,
    queue,
    tasks: [step],
  });
  const ids: string[] = [];
  try {
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(step);
      return new Response("accepted", { status: 202 });
    }, { backend });
    for (let i = 0; i < 3; i++) {
      const { response } = await callHandler(handler, "/");
      await response.body?.cancel();
    }
  } finally {
    // The deletions are not awaited by the stores; the pool ends once they
    // are done.
    await backend.close();
  }
  const jobs = await query<{ id: string; dedup_id: string }>(
    server.url,
    "SELECT id, dedup_id FROM bullmq.job WHERE queue = $1 ORDER BY id",
    [queue],
  );
  for (const { id, dedup_id } of jobs) {
    assert.equal(id, `${dedup_id}.0`);
    ids.push(dedup_id);
  }
  assert.equal(ids.length, 3);
  assert.deepEqual(
    await query(
      server.url,
      "SELECT dedup_id FROM bullmq.dedup WHERE queue = $1",
      [queue],
    ),
    [],
  );
});

Deno.test("bullmqBackend() and bullmqWorker() refuse on PostgreSQL what means nothing there, and a connection that is no PostgreSQL URL or pool, hiding its password", async (t) => {
  const step = defineTask(() => {}, { name: "step" });
  const url = "postgres://app:s3cret@127.0.0.1:5432/app";
  const cases: {
    name: string;
    options: Record<string, unknown>;
    message: (action: string) => string;
  }[] = [
    {
      name: "shards",
      options: { connection: url, shards: 2 },
      message: (action) =>
        `${action} as 'shards' means nothing on PostgreSQL, where a queue is rows of BullMQ's tables, not keys on the nodes of a Redis Cluster: remove it`,
    },
    {
      name: "a Redis prefix",
      options: { connection: "postgresql://app@db/app", prefix: "jobs" },
      message: (action) =>
        `${action} as 'prefix' means nothing on PostgreSQL, where BullMQ keeps every queue in its "bullmq" schema: remove it, and tell queues apart by 'queue'`,
    },
    {
      name: "a malformed URL",
      options: { connection: "postgres://app:s3cret@db:99999/app" },
      message: (action) =>
        `${action} as 'connection' must be a valid postgres:// or postgresql:// URL: current value is "postgres://***@db:99999/app"`,
    },
    {
      name: "a URL without a host",
      options: { connection: "postgres://app:s3cret@/app" },
      message: (action) =>
        `${action} as 'connection' must be a valid postgres:// or postgresql:// URL: current value is "postgres://***@/app"`,
    },
    {
      name: "node-postgres options",
      options: { connection: { connectionString: url } },
      message: (action) =>
        `${action} as 'connection' must be the postgres:// URL itself, or a pg.Pool, not node-postgres options: current value is an object`,
    },
    {
      name: "a pg.Client",
      options: { connection: new pg.Client({ connectionString: url }) },
      message: (action) =>
        `${action} as 'connection' must be a pg.Pool, not a single client: current value is a Client`,
    },
  ];
  for (const { name, options, message } of cases) {
    await t.step(name, () => {
      assert.throws(
        () => bullmqBackend({ tasks: [step], ...options } as never),
        { name: "TypeError", message: message("Cannot create BullMQ backend") },
      );
      assert.throws(
        () => bullmqWorker({ tasks: [step], ...options } as never),
        { name: "TypeError", message: message("Cannot start BullMQ worker") },
      );
    });
  }
});

Deno.test({
  ...postgresTest,
  name:
    "bullmqBackend() on PostgreSQL keeps the options parameter of the URL beside the search path it sets",
}, async () => {
  await using server = await startPostgres();
  const queue = `test-${crypto.randomUUID()}`;
  const step = defineTask(() => {}, { name: "step" });
  const options = encodeURIComponent("-c application_name=orders-web");
  const backend = bullmqBackend({
    connection: `${server.url}?sslmode=disable&options=${options}`,
    queue,
    tasks: [step],
  });
  try {
    // node-postgres takes the URL's options over the pool's own: the
    // search path was lost, and the backend down for good.
    await backend.enqueue({
      id: "chain",
      tasks: [{
        name: step.name,
        args: [],
        timeout: undefined,
        retry: undefined,
        task: step as DefinedTask,
      }],
      request: undefined,
      delivered: undefined,
    }, { signal: AbortSignal.timeout(10_000) });
    assert.deepEqual(
      await query(
        server.url,
        "SELECT id FROM bullmq.job WHERE queue = $1",
        [queue],
      ),
      [{ id: "chain.0" }],
    );
    // The pool's connections, idle now, carry the URL's option too.
    const [{ count }] = await query<{ count: string }>(
      server.url,
      "SELECT count(*) AS count FROM pg_stat_activity WHERE application_name = 'orders-web'",
    ) as [{ count: string }];
    assert.ok(Number(count) > 0, count);
  } finally {
    await backend.close();
  }
});

Deno.test("bullmqWorker() refuses a pg.Pool of one connection, which BullMQ's LISTEN would hold: no task would ever run", () => {
  const step = defineTask(() => {}, { name: "step" });
  const pool = new pg.Pool({ max: 1, options: "-c search_path=bullmq" });
  try {
    assert.throws(() => bullmqWorker({ connection: pool, tasks: [step] }), {
      name: "RangeError",
      message:
        "Cannot start BullMQ worker as the pg.Pool in 'connection' must allow at least 2 connections ('max'), as BullMQ's worker holds one for LISTEN and runs its queries on the others: current value is 1",
    });
  } finally {
    void pool.end();
  }
});

Deno.test({
  ...postgresTest,
  name:
    "bullmqBackend() and bullmqWorker() on a pg.Pool the caller owns leave it open, and say when its search path lacks BullMQ's schema",
}, async () => {
  await using server = await startPostgres();
  const queue = `test-${crypto.randomUUID()}`;
  const ran = Promise.withResolvers<string>();
  const step = defineTask((_context, label: string) => ran.resolve(label), {
    name: "step",
  });
  const pool = new pg.Pool({
    connectionString: server.url,
    options: "-c search_path=bullmq",
  });
  try {
    const worker = bullmqWorker({ connection: pool, queue, tasks: [step] });
    const backend = bullmqBackend({ connection: pool, queue, tasks: [step] });
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(step, "on the caller's pool");
      return new Response("accepted", { status: 202 });
    }, { backend });
    await (await callHandler(handler, "/")).tasks;
    assert.equal(await ran.promise, "on the caller's pool");
    await worker.close();
    await backend.close();
    // Still the caller's, and open, and as it was: BullMQ's listeners, one
    // per queue, flow producer and worker, made Node's MaxListeners warning
    // appear at the fourth backend and worker on one pool.
    assert.deepEqual((await pool.query("SELECT 1 AS one")).rows, [{ one: 1 }]);
    assert.equal(pool.listenerCount("error"), 0);
  } finally {
    await pool.end();
  }

  // A pool made without the search path: the outage line says what to do.
  const plain = new pg.Pool({ connectionString: server.url });
  using output = consoleLines();
  const backend = bullmqBackend({ connection: plain, queue, tasks: [step] });
  try {
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(step, "never stored");
      return new Response("accepted", { status: 202 });
    }, { backend, handOver: "after-response" });
    await callHandler(handler, "/");
    await within(
      output.seen(/^The BullMQ backend cannot reach PostgreSQL/),
      10_000,
      "the line",
    );
    assert.deepEqual(output.lines, [
      `The BullMQ backend cannot reach PostgreSQL (The pg.Pool in 'connection' must have BullMQ's schema "bullmq" first in its search path, as BullMQ's queries name its tables without it: make it with options: "-c search_path=bullmq"): chains wait to be stored until it is back`,
    ]);
    await handler.drain({ timeout: 100 });
  } finally {
    await backend.close();
    await plain.end();
  }
});

Deno.test({
  ...postgresTest,
  name:
    "bullmqWorker() on PostgreSQL says at start which tasks the web processes store that it lacks",
}, async () => {
  await using server = await startPostgres();
  const queue = `test-${crypto.randomUUID()}`;
  const known = defineTask(() => {}, { name: "known" });
  const ghost = defineTask(() => {}, { name: "ghost" });
  const backend = bullmqBackend({
    connection: server.url,
    queue,
    tasks: [known, ghost],
  });
  using output = consoleLines();
  try {
    // The names are written once BullMQ's schema is there, and the backend
    // tells nobody when: the database is asked until it has them.
    const written = async () =>
      (await query<{ field: string }>(
        server.url,
        "SELECT field FROM bullmq.meta WHERE queue = $1 AND field LIKE 'background-tasks:task:%'",
        [queue],
      ).catch(() => [])).length;
    while (await written() < 2) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const worker = bullmqWorker({
      connection: server.url,
      queue,
      tasks: [known],
    });
    try {
      await within(output.seen(/does not know/), 10_000, "the line");
    } finally {
      await worker.close();
    }
    assert.deepEqual(output.lines, [
      `The BullMQ worker does not know task "ghost", which web processes store in queue "${queue}": add it to its 'tasks', or its jobs fail`,
    ]);
  } finally {
    await backend.close();
  }
});

Deno.test({
  ...postgresTest,
  name:
    "bullmqBackend() and bullmqWorker() only read BullMQ's schema when a separate step made it, so that a user without the right to create tables runs them",
}, async () => {
  await using server = await startPostgres();
  // The separate step, as docs/durable.md shows it.
  const admin = new pg.Client({ connectionString: server.url });
  await admin.connect();
  try {
    await runMigrations(admin);
    await admin.query("CREATE ROLE app LOGIN PASSWORD 'app-secret'");
    await admin.query("GRANT USAGE ON SCHEMA bullmq TO app");
    await admin.query(
      "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA bullmq TO app",
    );
    await admin.query("GRANT USAGE ON ALL SEQUENCES IN SCHEMA bullmq TO app");
    await admin.query("REVOKE CREATE ON SCHEMA public FROM PUBLIC");
  } finally {
    await admin.end();
  }
  const connection =
    `postgres://app:app-secret@127.0.0.1:${server.port}/postgres`;
  const queue = `test-${crypto.randomUUID()}`;
  const ran = Promise.withResolvers<void>();
  const step = defineTask(() => ran.resolve(), { name: "step" });
  using output = consoleLines();
  const worker = bullmqWorker({ connection, queue, tasks: [step] });
  const backend = bullmqBackend({ connection, queue, tasks: [step] });
  try {
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(step);
      return new Response("accepted", { status: 202 });
    }, { backend });
    await (await callHandler(handler, "/")).tasks;
    await within(ran.promise, 10_000, "the task");
  } finally {
    await worker.close();
    await backend.close();
  }
  assert.deepEqual(output.lines, []);
});

Deno.test({
  ...postgresTest,
  name:
    "bullmqBackend() and bullmqWorker() on PostgreSQL never say the password: a wrong one, an unreachable host",
}, async (t) => {
  await using server = await startPostgres();
  const step = defineTask(() => {}, { name: "step" });
  const password = "n0t-the-p@ssword/+";
  const cases = [
    {
      name: "a wrong password",
      url: `postgres://postgres:${
        encodeURIComponent(password)
      }@127.0.0.1:${server.port}/postgres`,
      error: /^password authentication failed for user "postgres"$/,
    },
    {
      name: "an unreachable host",
      url: `postgresql://postgres:${
        encodeURIComponent(password)
      }@127.0.0.1:1/postgres`,
      error: /^connect ECONNREFUSED 127\.0\.0\.1:1$/,
    },
  ];
  for (const { name, url, error } of cases) {
    await t.step(name, async () => {
      using output = consoleLines();
      const statuses: BackendStatus[] = [];
      const told = Promise.withResolvers<void>();
      const backend = bullmqBackend({
        connection: url,
        tasks: [step],
        onStatusChange(status) {
          statuses.push(status);
          told.resolve();
        },
      });
      const worker = bullmqWorker({ connection: url, tasks: [step] });
      try {
        const handler = withBackgroundTasks((_request, _info, tasks) => {
          tasks.addTask(step);
          return new Response("accepted", { status: 202 });
        }, { backend, handOver: "after-response" });
        await callHandler(handler, "/");
        await within(
          output.seen(/^The BullMQ worker cannot reach PostgreSQL/),
          10_000,
          "the worker's line",
        );
        await within(told.promise, 10_000, "the backend's status");
        await handler.drain({ timeout: 100 });
      } finally {
        await worker.close();
        await backend.close();
      }
      assert.equal(statuses[0]?.state, "down");
      assert.match(statuses[0]?.error ?? "", error);
      assert.equal(output.lines.length, 1);
      assert.match(
        output.lines[0]!,
        /^The BullMQ worker cannot reach PostgreSQL \((.*)\); it tries again until PostgreSQL is back$/,
      );
      for (const text of [...output.lines, JSON.stringify(statuses)]) {
        assert.ok(!text.includes(password), text);
        assert.ok(!text.includes(encodeURIComponent(password)), text);
      }
    });
  }
});

Deno.test({
  ...postgresTest,
  name:
    "a program that imports the package alone runs on PostgreSQL at its first run, without a config, a lockfile or an import of pg",
}, async () => {
  await using server = await startPostgres();
  const dir = await Deno.makeTempDir({ prefix: "background_tasks_pg_user_" });
  const entry = (name: string) =>
    JSON.stringify(new URL(`../../${name}`, import.meta.url).href);
  try {
    await Deno.writeTextFile(
      `${dir}/main.ts`,
      `import { defineTask, withBackgroundTasks } from ${entry("mod.ts")};
import { bullmqBackend, bullmqWorker } from ${entry("bullmq.ts")};

const connection = Deno.env.get("DATABASE_URL")!;
const ran = Promise.withResolvers<void>();
const hello = defineTask(() => ran.resolve(), { name: "hello" });
const worker = bullmqWorker({ connection, tasks: [hello] });
const backend = bullmqBackend({ connection, tasks: [hello] });
const handler = withBackgroundTasks((_request, _info, tasks) => {
  tasks.addTask(hello);
  return new Response("accepted", { status: 202 });
}, { backend });
const response = await handler(new Request("http://localhost/"), {
  remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 1 },
  completed: Promise.resolve(),
} as Deno.ServeHandlerInfo);
console.log(response.status);
await ran.promise;
console.log("ran");
await worker.close();
await backend.close();
`,
    );
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-net=127.0.0.1", "--allow-env", "main.ts"],
      cwd: dir,
      env: { DATABASE_URL: server.url, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const decoder = new TextDecoder();
    assert.deepEqual(
      {
        code,
        stdout: decoder.decode(stdout),
        stderr: decoder.decode(stderr).split("\n").filter((line) =>
          line !== "" && !/^Download /.test(line) &&
          !/[╭│╰]|Ignored build scripts|msgpackr-extract|nodeModulesDir|Lifecycle scripts/
            .test(line)
        ),
      },
      { code: 0, stdout: "202\nran\n", stderr: [] },
    );
    // No lockfile was there, nor made.
    assert.deepEqual(
      (await Array.fromAsync(Deno.readDir(dir))).map((entry) => entry.name),
      ["main.ts"],
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

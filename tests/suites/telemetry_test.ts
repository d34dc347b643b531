// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Traces and metrics through Deno's built-in OpenTelemetry, seen from
// outside: a server runs in a process of its own with OTEL_DENO=true and
// exports to a receiver this test stands up on 127.0.0.1, over OTLP/HTTP
// JSON, as it would to a collector.

import assert from "node:assert/strict";
import { mock } from "node:test";
import {
  type OtlpDataPoint,
  type OtlpSpan,
  startOtlpReceiver,
} from "../_helpers/otlp.ts";
import { type Script, startScript } from "../_helpers/process.ts";
import { withBackgroundTasks } from "../../mod.ts";
import { sentInfo } from "../_helpers/common.ts";
import { redisTest, startRedis } from "../_helpers/redis.ts";
import { postgresTest, startPostgres } from "../_helpers/postgres.ts";

/** A server whose routes add tasks that succeed, fail, retry and fetch. */
const server = `
import { defineTask, withBackgroundTasks } from "@afterward/background-tasks";

let port = 0;
let flaky = 0;
const retried = defineTask(() => {
  if (++flaky === 1) throw new TypeError("first attempt fails");
}, { name: "retried", retry: { maxAttempts: 2, minDelay: 1 } });

async function callsInner(): Promise<void> {
  const response = await fetch("http://127.0.0.1:" + port + "/inner");
  await response.text();
}
function saves(_secret: string): void {}
function fails(_secret: string): void {
  throw new Error("storage is down");
}
// An error whose every property throws when read.
function throwsOdd(): void {
  const fail = () => {
    throw new Error("not readable");
  };
  throw Object.create(Error.prototype, {
    name: { get: fail },
    message: { get: fail },
    stack: { get: fail },
  });
}
function afterOdd(): void {}
const synced = defineTask((_context, _id: string) => {}, {
  name: "synced",
  key: (id) => id,
  onDuplicate: "skip",
});
let ended = 0;
const traced = withBackgroundTasks((request, _info, tasks) => {
  const path = new URL(request.url).pathname;
  if (path === "/inner") return new Response("inner");
  if (path === "/ok") {
    tasks.addTask(saves, "secret-argument");
    tasks.addTask(callsInner);
  }
  if (path === "/fail") tasks.addTask(fails, "secret-argument");
  if (path === "/retry") tasks.addTask(retried);
  if (path === "/keyed") {
    tasks.addTask(synced, "u42");
    tasks.addTask(synced, "u42");
  }
  if (path === "/odd") {
    tasks.addTask(throwsOdd);
    tasks.addTask(afterOdd);
  }
  return new Response("accepted", { status: 202 });
}, { onTaskError() {}, onTaskEnd: () => void ended++ });
const untraced = withBackgroundTasks((_request, _info, tasks) => {
  tasks.addTask(function untracedTask() {});
  return new Response("accepted", { status: 202 });
}, { telemetry: false });

const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request, info) => {
  const path = new URL(request.url).pathname;
  if (path === "/stop") {
    queueMicrotask(async () => {
      await server.shutdown();
      await Promise.all([traced.drain(), untraced.drain()]);
      console.log("drained, onTaskEnd told " + ended + " times");
    });
    return new Response("stopping");
  }
  return path === "/untraced" ? untraced(request, info) : traced(request, info);
});
port = server.addr.port;
console.log(port);
`;

const isServer = (path: string) => (span: OtlpSpan) =>
  span.kind === "server" && span.attributes["url.path"] === path;
const isTask = (name: string) => (span: OtlpSpan) =>
  span.name === `task ${name}`;

/** Sends the durable programs' order as a web process answers it: 202. */
async function postOrder(web: Script): Promise<void> {
  const response = await fetch(
    `http://127.0.0.1:${await web.nextLine()}/orders?token=secret-query`,
    { method: "POST" },
  );
  assert.equal(response.status, 202);
  await response.body?.cancel();
}

/**
 * Asserts that a worker's `reserve` and `charge` spans are consumer spans of
 * `system`'s `destination` under `request`, their message ids matching
 * `messageId(index)`, and hold no secret.
 */
function assertWorkerSpans(
  spans: readonly OtlpSpan[],
  request: OtlpSpan,
  system: string,
  destination: string,
  messageId: (index: number) => RegExp,
): void {
  const tasks = [spans.find(isTask("reserve"))!, spans.find(isTask("charge"))!];
  for (const [index, task] of tasks.entries()) {
    assert.equal(task.traceId, request.traceId);
    assert.equal(task.parentSpanId, request.spanId);
    assert.equal(task.kind, "consumer");
    assert.equal(task.attributes["messaging.system"], system);
    assert.equal(task.attributes["messaging.operation.type"], "process");
    assert.equal(task.attributes["messaging.operation.name"], "process");
    assert.equal(task.attributes["messaging.destination.name"], destination);
    assert.match(
      String(task.attributes["messaging.message.id"]),
      messageId(index),
    );
    assert.equal(task.attributes["background_task.outcome"], "succeeded");
    assert.doesNotMatch(JSON.stringify(task.attributes), /secret/);
  }
}

Deno.test("telemetry: each task attempt is a span in its request's trace, with its outcome, its error and its fetch calls under it", async () => {
  await using receiver = startOtlpReceiver();
  await using script = await startScript(
    server,
    ["--allow-net=127.0.0.1"],
    20_000,
    receiver.env,
  );
  const base = `http://127.0.0.1:${await script.nextLine()}`;
  for (const path of ["/ok", "/fail", "/retry", "/untraced", "/odd"]) {
    const response = await fetch(`${base}${path}?token=secret-query`);
    assert.equal(response.status, 202);
    await response.body?.cancel();
  }
  const spans = await receiver.waitForSpans((spans) =>
    spans.some(isTask("saves")) && spans.some(isTask("callsInner")) &&
    spans.some(isTask("fails")) &&
    spans.filter(isTask("retried")).length === 2 &&
    spans.some(isServer("/inner")) && spans.some(isServer("/untraced")) &&
    spans.some(isTask("afterOdd"))
  );

  // One trace per request: the task spans are children of its server span.
  const ok = spans.find(isServer("/ok"))!;
  const saves = spans.find(isTask("saves"))!;
  const callsInner = spans.find(isTask("callsInner"))!;
  for (const task of [saves, callsInner]) {
    assert.equal(task.traceId, ok.traceId);
    assert.equal(task.parentSpanId, ok.spanId);
    assert.equal(task.kind, "internal");
    assert.equal(task.scope, "@afterward/background-tasks");
  }
  assert.deepEqual(saves.attributes, {
    "background_task.name": "saves",
    "background_task.index": 0,
    "background_task.attempt": 1,
    "background_task.response_delivered": true,
    "background_task.outcome": "succeeded",
  });
  assert.equal(saves.status.code, 0);
  assert.equal(callsInner.attributes["background_task.index"], 1);
  // The tasks run after the response: the first starts once it is sent.
  assert.ok(saves.startTimeUnixNano >= ok.endTimeUnixNano);
  assert.ok(callsInner.startTimeUnixNano >= saves.endTimeUnixNano);

  // A task's fetch is a child of the task's span, and the request it makes
  // a child of that fetch, in the same trace.
  const client = spans.find((span) =>
    span.kind === "client" && span.parentSpanId === callsInner.spanId
  );
  assert.ok(client, "the task's fetch has a client span under the task");
  const inner = spans.find(isServer("/inner"))!;
  assert.equal(inner.traceId, ok.traceId);
  assert.equal(inner.parentSpanId, client.spanId);

  // A failure: error status, error.type and the exception, no argument.
  const failed = spans.find(isServer("/fail"))!;
  const fails = spans.find(isTask("fails"))!;
  assert.equal(fails.traceId, failed.traceId);
  assert.equal(fails.parentSpanId, failed.spanId);
  assert.deepEqual(fails.status, { code: 2, message: "storage is down" });
  assert.equal(fails.attributes["background_task.outcome"], "failed");
  assert.equal(fails.attributes["error.type"], "Error");
  assert.equal(fails.events[0]?.name, "exception");
  assert.equal(
    fails.events[0]?.attributes["exception.message"],
    "storage is down",
  );

  // A retry: one span per attempt, the first saying it will be retried.
  const retry = spans.find(isServer("/retry"))!;
  const attempts = spans.filter(isTask("retried")).sort((a, b) =>
    Number(a.attributes["background_task.attempt"]) -
    Number(b.attributes["background_task.attempt"])
  );
  assert.deepEqual(
    attempts.map((span) => [
      span.traceId === retry.traceId && span.parentSpanId === retry.spanId,
      span.attributes["background_task.attempt"],
      span.attributes["background_task.outcome"],
      span.attributes["background_task.will_retry"],
      span.attributes["error.type"],
      span.status.code,
    ]),
    [
      [true, 1, "failed", true, "TypeError", 2],
      [true, 2, "succeeded", undefined, undefined, 0],
    ],
  );
  assert.match(
    String(attempts[0]!.attributes["background_task.id"]),
    /^[0-9a-f-]{36}:0$/,
  );

  // An error that throws when read is recorded without it, and the chain
  // goes on.
  const odd = spans.find(isTask("throwsOdd"))!;
  assert.equal(odd.status.code, 2);
  assert.equal(odd.attributes["error.type"], "_OTHER");
  assert.equal(
    spans.find(isTask("afterOdd"))!.attributes["background_task.outcome"],
    "succeeded",
  );

  // `telemetry: false`: the request is traced by Deno, its task is not.
  assert.equal(spans.some(isTask("untracedTask")), false);

  // No argument and no query string in any attribute of ours.
  const ours = spans.filter((span) =>
    span.scope === "@afterward/background-tasks"
  );
  assert.equal(ours.length, 7);
  for (const span of ours) {
    const text = JSON.stringify([span.attributes, span.events, span.status]);
    assert.doesNotMatch(text, /secret/);
  }

  const stop = await fetch(`${base}/stop`);
  await stop.body?.cancel();
  // The hooks are told of every attempt alongside.
  assert.equal(await script.nextLine(), "drained, onTaskEnd told 7 times");
});

Deno.test("telemetry: attempts are measured by task and outcome, and the runners' tasks by outcome and state", async () => {
  await using receiver = startOtlpReceiver();
  await using script = await startScript(
    server,
    ["--allow-net=127.0.0.1"],
    20_000,
    receiver.env,
  );
  const base = `http://127.0.0.1:${await script.nextLine()}`;
  for (const path of ["/ok", "/fail", "/retry", "/keyed"]) {
    const response = await fetch(`${base}${path}`);
    await response.body?.cancel();
  }
  const points = await receiver.waitForMetrics((points) =>
    points.some((point) =>
      point.name === "background_task.attempt.duration" &&
      point.attributes["background_task.name"] === "retried" &&
      point.attributes["background_task.outcome"] === "succeeded"
    ) && points.some((point) =>
      point.name === "background_task.outcomes" &&
      point.attributes["background_task.outcome"] === "succeeded" &&
      point.value === 4
    )
  );
  // Each export repeats the cumulative points: the last of each counts.
  const latest = new Map<string, OtlpDataPoint>();
  for (const point of points) {
    if (point.scope !== "@afterward/background-tasks") continue;
    latest.set(JSON.stringify([point.name, point.attributes]), point);
  }
  const ours = (name: string) =>
    [...latest.values()].filter((point) => point.name === name);

  // Attempts: a histogram of durations by task and outcome, whose count is
  // the number of attempts.
  const durations = ours("background_task.attempt.duration");
  for (const point of durations) {
    assert.equal(point.kind, "histogram");
    assert.equal(point.unit, "s");
  }
  const attempts = durations.map((point) => [
    point.attributes["background_task.name"],
    point.attributes["background_task.outcome"],
    point.attributes["error.type"],
    point.count,
  ]).sort();
  assert.deepEqual(attempts, [
    ["callsInner", "succeeded", undefined, 1],
    ["fails", "failed", "Error", 1],
    ["retried", "failed", "TypeError", 1],
    ["retried", "succeeded", undefined, 1],
    ["saves", "succeeded", undefined, 1],
    ["synced", "succeeded", undefined, 1],
  ]);

  // Tasks, from the runners' stats: by outcome, and now by state.
  const outcomes = Object.fromEntries(
    ours("background_task.outcomes").map((point) => {
      assert.equal(point.kind, "sum");
      assert.equal(point.monotonic, true);
      return [point.attributes["background_task.outcome"], point.value];
    }),
  );
  assert.deepEqual(outcomes, {
    succeeded: 4,
    failed: 1,
    timedOut: 0,
    refused: 0,
    discarded: 0,
    skipped: 0,
    deduplicated: 1,
    abandoned: 0,
    handedOver: 0,
  });
  const states = ours("background_task.tasks").map((point) =>
    point.attributes["background_task.state"]
  );
  assert.deepEqual(states.sort(), ["queued", "running", "storing"]);

  const stop = await fetch(`${base}/stop`);
  await stop.body?.cancel();
  assert.equal(await script.nextLine(), "drained, onTaskEnd told 7 times");
});

Deno.test("telemetry: off, nothing is exported and the request path never asks Deno's telemetry", async () => {
  // Deno's telemetry is off in this test process: the wrapper must not so
  // much as read the active context.
  const { contextManager } = Deno.telemetry;
  const active = mock.method(contextManager, "active");
  try {
    let ran = 0;
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(() => ran++);
      return new Response(null);
    });
    await handler(new Request("http://localhost/"), sentInfo());
    await handler.drain();
    assert.equal(ran, 1);
    assert.equal(active.mock.callCount(), 0);
  } finally {
    active.mock.restore();
  }

  // A server without OTEL_DENO=true but with an endpoint exports nothing,
  // not even when it exits (when Deno's telemetry would flush).
  await using receiver = startOtlpReceiver();
  const { OTEL_DENO: _, ...endpoint } = receiver.env;
  await using script = await startScript(
    server,
    ["--allow-net=127.0.0.1"],
    20_000,
    endpoint,
  );
  const base = `http://127.0.0.1:${await script.nextLine()}`;
  for (const path of ["/ok", "/fail", "/retry", "/stop"]) {
    const response = await fetch(`${base}${path}`);
    await response.body?.cancel();
  }
  assert.equal(await script.nextLine(), "drained, onTaskEnd told 5 times");
  const { code } = await script.exit();
  assert.equal(code, 0);
  assert.deepEqual([receiver.spans.length, receiver.metrics.length], [0, 0]);
});

/**
 * A chain in Deno KV: `ROLE=web` stores it before its response and is
 * killed; `ROLE=worker` then runs it from the same database.
 */
const kvProgram = `
import { defineTask, withBackgroundTasks } from "@afterward/background-tasks";
import { kvBackend } from "@afterward/background-tasks/kv";

const reserve = defineTask((_context, _secret: string) => {}, { name: "reserve" });
const charge = defineTask(() => {
  console.log("charged");
}, { name: "charge" });
const kv = await Deno.openKv(Deno.env.get("KV_PATH"));
const web = Deno.env.get("ROLE") === "web";
const backend = kvBackend({ kv, tasks: [reserve, charge], listen: !web });
if (web) {
  const handler = withBackgroundTasks((_request, _info, tasks) => {
    tasks.addTask(reserve, "secret-argument");
    tasks.addTask(charge);
    return new Response("accepted", { status: 202 });
  }, { backend });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, handler);
  console.log(server.addr.port);
} else {
  console.log("listening");
}
`;

Deno.test("telemetry: a chain stored in Deno KV runs in its request's trace after the web process is killed", async () => {
  await using receiver = startOtlpReceiver();
  const dir = await Deno.makeTempDir({ prefix: "background_tasks_otel_kv_" });
  try {
    const env = { ...receiver.env, KV_PATH: `${dir}/kv.sqlite3` };
    const flags = [
      "--unstable-kv",
      "--allow-net=127.0.0.1",
      "--allow-env",
      `--allow-write=${dir}`,
    ];
    let request: OtlpSpan | undefined;
    {
      await using web = await startScript(kvProgram, flags, 20_000, {
        ...env,
        ROLE: "web",
      });
      await postOrder(web);
      // Its span exported, the web process dies with the chain stored.
      request = (await receiver.waitForSpans((spans) =>
        spans.some((span) =>
          span.kind === "server"
        )
      )).find((span) => span.kind === "server");
      web.child.kill("SIGKILL");
    }
    await using worker = await startScript(kvProgram, flags, 20_000, {
      ...env,
      ROLE: "worker",
    });
    assert.equal(await worker.nextLine(), "listening");
    assert.equal(await worker.nextLine(), "charged");
    const spans = await receiver.waitForSpans((spans) =>
      spans.some(isTask("reserve")) && spans.some(isTask("charge"))
    );
    assertWorkerSpans(
      spans,
      request!,
      "deno_kv",
      "background-tasks",
      (index) => new RegExp(`^[0-9a-f-]{36}:${index}$`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * A chain on Redis (or on PostgreSQL, at the URL in CONNECTION): `ROLE=web`
 * stores it with the BullMQ backend before its response; `ROLE=worker`,
 * another process, runs it.
 */
const bullmqProgram = `
import { defineTask, withBackgroundTasks } from "@afterward/background-tasks";
import { bullmqBackend, bullmqWorker } from "@afterward/background-tasks/bullmq";

const connection = Deno.env.get("CONNECTION") ??
  { host: "127.0.0.1", port: Number(Deno.env.get("REDIS_PORT")) };
const queue = Deno.env.get("QUEUE")!;
const reserve = defineTask((_context, _secret: string) => {}, { name: "reserve" });
const charge = defineTask(() => {
  console.log("charged");
}, { name: "charge" });
if (Deno.env.get("ROLE") === "web") {
  const backend = bullmqBackend({ connection, queue, tasks: [reserve, charge] });
  const handler = withBackgroundTasks((_request, _info, tasks) => {
    tasks.addTask(reserve, "secret-argument");
    tasks.addTask(charge);
    return new Response("accepted", { status: 202 });
  }, { backend });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, handler);
  console.log(server.addr.port);
} else {
  bullmqWorker({ connection, queue, tasks: [reserve, charge] });
  console.log("listening");
}
`;

Deno.test({
  name:
    "telemetry: a chain stored in Redis runs in its request's trace in a BullMQ worker",
  ...redisTest,
}, async () => {
  await using redis = await startRedis();
  await using receiver = startOtlpReceiver();
  const env = {
    ...receiver.env,
    REDIS_PORT: String(redis.port),
    QUEUE: `otel-${crypto.randomUUID()}`,
  };
  const flags = ["--allow-net=127.0.0.1", "--allow-env", "--allow-sys"];
  await using web = await startScript(bullmqProgram, flags, 20_000, {
    ...env,
    ROLE: "web",
  });
  await postOrder(web);
  await using worker = await startScript(bullmqProgram, flags, 20_000, {
    ...env,
    ROLE: "worker",
  });
  assert.equal(await worker.nextLine(), "listening");
  assert.equal(await worker.nextLine(), "charged");
  const spans = await receiver.waitForSpans((spans) =>
    spans.some(isTask("reserve")) && spans.some(isTask("charge")) &&
    spans.some((span) => span.kind === "server")
  );
  const request = spans.find((span) => span.kind === "server")!;
  assertWorkerSpans(
    spans,
    request,
    "bullmq",
    env.QUEUE,
    (index) => new RegExp(`^[0-9a-f-]{36}\\.${index}$`),
  );
});

Deno.test({
  name:
    "telemetry: a chain stored in PostgreSQL runs in its request's trace in a BullMQ worker",
  ...postgresTest,
}, async () => {
  await using postgres = await startPostgres();
  await using receiver = startOtlpReceiver();
  const env = {
    ...receiver.env,
    CONNECTION: postgres.url,
    QUEUE: `otel-${crypto.randomUUID()}`,
  };
  const flags = ["--allow-net=127.0.0.1", "--allow-env", "--allow-sys"];
  await using web = await startScript(bullmqProgram, flags, 20_000, {
    ...env,
    ROLE: "web",
  });
  await postOrder(web);
  await using worker = await startScript(bullmqProgram, flags, 20_000, {
    ...env,
    ROLE: "worker",
  });
  assert.equal(await worker.nextLine(), "listening");
  assert.equal(await worker.nextLine(), "charged");
  const spans = await receiver.waitForSpans((spans) =>
    spans.some(isTask("reserve")) && spans.some(isTask("charge")) &&
    spans.some((span) => span.kind === "server")
  );
  const request = spans.find((span) => span.kind === "server")!;
  assertWorkerSpans(
    spans,
    request,
    "bullmq",
    env.QUEUE,
    (index) => new RegExp(`^[0-9a-f-]{36}\\.${index}$`),
  );
});

Deno.test("telemetry: a worker's task gets a span of its own when its stored traceparent is missing or malformed, under it when valid", async () => {
  await using receiver = startOtlpReceiver();
  const worker = new URL("../../src/durable/_worker.ts", import.meta.url).href;
  const valid = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  const traces = [
    undefined,
    42,
    "garbage",
    `${valid}-extra`,
    "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",
    // W3C: an all-zero trace id or parent id is invalid.
    `00-${"0".repeat(32)}-b7ad6b7169203331-01`,
    `00-0af7651916cd43dd8448eb211c80319c-${"0".repeat(16)}-01`,
    valid,
  ];
  await using script = await startScript(
    `
import { defineTask } from "@afterward/background-tasks";
import { runQueued, workerConfig } from ${JSON.stringify(worker)};

const task = defineTask(() => {}, { name: "stored" });
const config = workerConfig({ tasks: [task] }, "Cannot run");
const traces = ${JSON.stringify(traces.map((trace) => trace ?? null))};
for (const [index, trace] of traces.entries()) {
  const result = await runQueued({
    task, args: [], id: "chain:" + index, index, attempt: 1,
    request: undefined, delivered: undefined, trace: trace ?? undefined,
  }, config);
  console.log(result.outcome);
}
`,
    [],
    20_000,
    receiver.env,
  );
  for (const _ of traces) assert.equal(await script.nextLine(), "succeeded");
  const spans = await receiver.waitForSpans((spans) =>
    spans.filter(isTask("stored")).length === traces.length
  );
  const parents = spans.filter(isTask("stored")).sort((a, b) =>
    Number(a.attributes["background_task.index"]) -
    Number(b.attributes["background_task.index"])
  ).map((
    span,
  ) => [
    span.traceId === "0af7651916cd43dd8448eb211c80319c",
    span.parentSpanId,
  ]);
  assert.deepEqual(parents, [
    ...traces.slice(0, -1).map(() => [false, undefined]),
    [true, "b7ad6b7169203331"],
  ]);
});

Deno.test("telemetry: a task given up at a drain's deadline ends its span as abandoned, though it never settles", async () => {
  await using receiver = startOtlpReceiver();
  await using script = await startScript(
    `
import { withBackgroundTasks } from "@afterward/background-tasks";

const handler = withBackgroundTasks((_request, _info, tasks) => {
  tasks.addTask(function hangs() {
    console.log("started");
    return new Promise(() => {});
  });
  return new Response("accepted", { status: 202 });
}, { onTaskError() {} });
const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request, info) => {
  if (new URL(request.url).pathname !== "/stop") return handler(request, info);
  queueMicrotask(async () => {
    await server.shutdown();
    const { abandoned } = await handler.drain({ timeout: 1 });
    console.log("abandoned " + abandoned);
  });
  return new Response("stopping");
});
console.log(server.addr.port);
`,
    ["--allow-net=127.0.0.1"],
    20_000,
    receiver.env,
  );
  const base = `http://127.0.0.1:${await script.nextLine()}`;
  const response = await fetch(base);
  await response.body?.cancel();
  assert.equal(await script.nextLine(), "started");
  const stop = await fetch(`${base}/stop`);
  await stop.body?.cancel();
  assert.equal(await script.nextLine(), "abandoned 1");
  const spans = await receiver.waitForSpans((spans) =>
    spans.some(isTask("hangs"))
  );
  const hangs = spans.find(isTask("hangs"))!;
  assert.equal(hangs.attributes["background_task.outcome"], "abandoned");
  assert.equal(hangs.attributes["error.type"], "abandoned");
  assert.equal(hangs.status.code, 2);
});

Deno.test("telemetry: a chain whose request's span throws when asked for its context is still stored and run", async () => {
  await using receiver = startOtlpReceiver();
  await using script = await startScript(
    `
import { defineTask, withBackgroundTasks } from "@afterward/background-tasks";
import { kvBackend } from "@afterward/background-tasks/kv";

const stored = defineTask(() => console.log("ran"), { name: "stored" });
const kv = await Deno.openKv(":memory:");
const handler = withBackgroundTasks((_request, _info, tasks) => {
  tasks.addTask(stored);
  return new Response("accepted", { status: 202 });
}, { backend: kvBackend({ kv, tasks: [stored] }), onTaskError() {} });
// A span of someone else's, active in the handler, that throws when asked.
const { contextManager } = Deno.telemetry;
const odd = contextManager.active().setValue(
  Symbol.for("OpenTelemetry Context Key SPAN"),
  { spanContext() { throw new Error("odd span"); } },
);
const server = Deno.serve(
  { hostname: "127.0.0.1", port: 0, onListen() {} },
  (request, info) => contextManager.with(odd, () => handler(request, info)),
);
console.log(server.addr.port);
`,
    ["--unstable-kv", "--allow-net=127.0.0.1"],
    20_000,
    receiver.env,
  );
  const response = await fetch(`http://127.0.0.1:${await script.nextLine()}`);
  assert.equal(response.status, 202);
  await response.body?.cancel();
  assert.equal(await script.nextLine(), "ran");
});

// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Compile-time guarantees. `deno test` type-checks this module before running
// it: each `@ts-expect-error` line fails the run if the call it marks ever
// becomes valid, and the accepted calls fail it if they stop compiling.

import assert from "node:assert/strict";
import {
  BackgroundTasks,
  type DrainableHandler,
  withBackgroundTasks,
} from "../../mod.ts";
import type * as root from "../../mod.ts";
import type * as backend from "../../backend.ts";

function writeNotification(email: string, message = ""): string {
  return `notification for ${email}: ${message}`;
}

async function resize(
  image: Uint8Array,
  size: { width: number; height: number },
): Promise<number> {
  await Promise.resolve();
  return image.length * size.width * size.height;
}

Deno.test("addTask() accepts arguments that match the function's parameters", async () => {
  const tasks = new BackgroundTasks();
  tasks.addTask(writeNotification, "a@example.com", "some notification");
  tasks.addTask(writeNotification, "a@example.com");
  tasks.addTask(resize, new Uint8Array(2), { width: 2, height: 3 });
  tasks.addTask(() => {});
  tasks.addTask(<T>(value: T) => value, 1);
  tasks.addTask((...lines: string[]) => lines.length, "a", "b", "c");
  const results = await tasks.run();
  assert.deepEqual(results.map((result) => result.status), [
    "fulfilled",
    "fulfilled",
    "fulfilled",
    "fulfilled",
    "fulfilled",
    "fulfilled",
  ]);
});

Deno.test("addTask() rejects arguments that do not match at compile time", () => {
  const tasks = new BackgroundTasks();
  // Written as a function that is never called: only the types are tested.
  const rejected = () => {
    // @ts-expect-error: the email is missing
    tasks.addTask(writeNotification);
    // @ts-expect-error: a number is not a string
    tasks.addTask(writeNotification, 42);
    // @ts-expect-error: one argument too many
    tasks.addTask(writeNotification, "a@example.com", "message", "extra");
    // @ts-expect-error: the size object lacks a height
    tasks.addTask(resize, new Uint8Array(2), { width: 2 });
    // @ts-expect-error: arguments in the wrong order
    tasks.addTask(resize, { width: 2, height: 3 }, new Uint8Array(2));
    // @ts-expect-error: the function takes no arguments
    tasks.addTask(() => {}, 1);
    // @ts-expect-error: rest parameters are checked too
    tasks.addTask((...lines: string[]) => lines.length, "a", 2);
    // @ts-expect-error: not a function
    tasks.addTask("writeNotification", "a@example.com");
  };
  assert.equal(typeof rejected, "function");
  assert.equal(tasks.size, 0);
});

Deno.test("withBackgroundTasks() returns a handler that Deno.serve and deno serve accept", () => {
  const handler: DrainableHandler = withBackgroundTasks(
    (_request, _info, tasks) => {
      tasks.addTask(writeNotification, "a@example.com");
      return new Response("ok");
    },
  );
  const serveHandler: Deno.ServeHandler = handler;
  const defaultExport = { fetch: handler } satisfies Deno.ServeDefaultExport;
  assert.equal(serveHandler, defaultExport.fetch);
  // @ts-expect-error: the handler must return a Response
  withBackgroundTasks(() => "not a response");
});

Deno.test("addTask() refuses a method that needs its this, which a task is called without", () => {
  class Mailer {
    sent: string[] = [];
    send(this: Mailer, to: string): void {
      this.sent.push(to);
    }
  }
  const mailer = new Mailer();
  const tasks = new BackgroundTasks();
  const rejected = () => {
    // @ts-expect-error: the method would run with `this` undefined
    tasks.addTask(mailer.send, "a@example.com");
  };
  tasks.addTask((to: string) => mailer.send(to), "a@example.com");
  tasks.addTask(mailer.send.bind(mailer), "b@example.com");
  assert.equal(typeof rejected, "function");
  assert.equal(tasks.size, 2);
});

Deno.test("the root entry point names of the backend contract what its options and results use: the rest is /backend's", () => {
  // What the `backend` option, `stats.backend` and a backend's close are.
  const used = (
    backend: root.TaskBackend,
    status: root.BackendStatus,
    close: root.BackendCloseOptions,
    closed: root.BackendCloseResult,
  ) => [backend, status, close, closed];
  // Written as functions that are never called: only the types are tested.
  const notRoot = [
    // @ts-expect-error: a backend's chain is /backend's
    (chain: root.BackendChain) => chain,
    // @ts-expect-error: a backend's task is /backend's
    (task: root.BackendTask) => task,
    // @ts-expect-error: enqueue()'s options are /backend's
    (options: root.EnqueueOptions) => options,
    // @ts-expect-error: a worker's options are /backend's
    (options: root.WorkerOptions) => options,
    // @ts-expect-error: the durable backends' admin shape is /backend's
    (durable: root.DurableBackend) => durable,
    // @ts-expect-error: a durable backend's failed task is /backend's
    (task: root.FailedTask) => task,
  ];
  const inBackend = (
    chain: backend.BackendChain,
    task: backend.BackendTask,
    options: backend.EnqueueOptions,
    worker: backend.WorkerOptions,
    durable: backend.DurableBackend,
    failed: backend.FailedTask,
  ) => [chain, task, options, worker, durable, failed];
  assert.equal(typeof used, "function");
  assert.equal(notRoot.length, 6);
  assert.equal(typeof inBackend, "function");
});

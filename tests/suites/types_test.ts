// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Compile-time guarantees. `deno test` type-checks this module before running
// it: each `@ts-expect-error` line fails the run if the call it marks ever
// becomes valid, and the accepted calls fail it if they stop compiling.

import assert from "node:assert/strict";
import {
  BackgroundTasks,
  type BackgroundTasksHandler,
  defineTask,
  type DrainableHandler,
  type DurableTasks,
  type DurableTasksHandler,
  serve,
  type TaskBackend,
  withBackgroundTasks,
  type WithBackgroundTasksOptions,
} from "../../mod.ts";
import type * as root from "../../mod.ts";
import type * as backend from "../../backend.ts";
import {
  backgroundTasks,
  type BackgroundTasksVariables,
  type DurableTasksVariables,
} from "../../hono.ts";
import { Hono } from "npm:hono@^4";

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

const sendInvoice = defineTask((_context, _order: string) => {}, {
  name: "sendInvoice",
});

/** A backend that takes every chain and keeps nothing. */
const anyBackend: TaskBackend = {
  accept() {},
  enqueue: () => Promise.resolve(),
};

Deno.test("with a backend in its options, a handler's addTask() takes only defined tasks at compile time, and tasks.inProcess takes any", () => {
  // Written as functions that are never called: only the types are tested.
  const handlers = [
    () =>
      withBackgroundTasks((_request, _info, tasks) => {
        tasks.addTask(sendInvoice, "42");
        tasks.inProcess.addTask(writeNotification, "a@example.com");
        tasks.waitUntil(Promise.resolve());
        // @ts-expect-error: the backend runs only tasks made by defineTask
        tasks.addTask(writeNotification, "a@example.com");
        // @ts-expect-error: a defined task's arguments are checked too
        tasks.addTask(sendInvoice, 42);
        return new Response("ok");
      }, { backend: anyBackend }),
    () =>
      withBackgroundTasks(async (_request, _info, tasks) => {
        await Promise.resolve();
        // @ts-expect-error: so in an async handler
        tasks.addTask(() => {});
        return new Response("ok");
      }, { backend: anyBackend, handOver: "after-response", maxPending: 10 }),
    () =>
      serve({ port: 0, backend: anyBackend }, (_request, _info, tasks) => {
        // @ts-expect-error: serve(options, handler) too
        tasks.addTask(writeNotification, "a@example.com");
        tasks.inProcess.addTask(writeNotification, "a@example.com");
        return new Response("ok");
      }),
    () =>
      serve({
        port: 0,
        backend: anyBackend,
        handler: (_request, _info, tasks) => {
          // @ts-expect-error: serve({ ...options, handler }) too
          tasks.addTask(writeNotification, "a@example.com");
          return new Response("ok");
        },
      }),
  ];
  // A helper of the handler's declares the tasks it takes.
  const helper = (tasks: DurableTasks) => tasks.addTask(sendInvoice, "42");
  const durable: DurableTasksHandler = (_request, _info, tasks) => {
    helper(tasks);
    return new Response("ok");
  };
  withBackgroundTasks(durable, { backend: anyBackend });
  // Where the types cannot tell, the run-time TypeError remains: options
  // typed without their backend, or a handler typed for none.
  const options: WithBackgroundTasksOptions = { backend: anyBackend };
  const plain: BackgroundTasksHandler = (_request, _info, tasks) => {
    tasks.addTask(writeNotification, "a@example.com");
    return new Response("ok");
  };
  const untold = [
    () => withBackgroundTasks(plain, options),
    () => withBackgroundTasks(plain, { backend: anyBackend }),
  ];
  // Without a backend, the handler and its helpers are as they were.
  withBackgroundTasks((_request, _info, tasks: BackgroundTasks) => {
    tasks.addTask(writeNotification, "a@example.com");
    assert.equal(tasks.inProcess, tasks);
    return new Response("ok");
  });
  // The request's tasks have the shape a helper for a backend expects.
  const shaped: DurableTasks = new BackgroundTasks();
  assert.equal(shaped.size, 0);
  withBackgroundTasks((_request, _info, tasks) => {
    // @ts-expect-error: a helper that adds plain functions is not one for a backend
    ((all: BackgroundTasks) => all.addTask(() => {}))(tasks);
    return new Response("ok");
  }, { backend: anyBackend });
  assert.equal(handlers.length + untold.length, 6);
});

Deno.test("an app that declares DurableTasksVariables takes only defined tasks at c.var.backgroundTasks.addTask() at compile time", () => {
  const durable = new Hono<{ Variables: DurableTasksVariables }>();
  durable.use(backgroundTasks({ backend: anyBackend }));
  durable.post("/orders/:id", (c) => {
    c.var.backgroundTasks.addTask(sendInvoice, c.req.param("id"));
    c.var.backgroundTasks.inProcess.addTask(writeNotification, "a@b.c");
    // @ts-expect-error: the backend runs only tasks made by defineTask
    c.var.backgroundTasks.addTask(writeNotification, "a@example.com");
    return c.text("ok");
  });
  // Hono does not tie the app's variables to the middleware's options.
  const untold = new Hono<{ Variables: BackgroundTasksVariables }>();
  untold.use(backgroundTasks({ backend: anyBackend }));
  assert.equal(typeof durable.fetch, "function");
});

// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The request scope both adapters follow: the Deno.serve wrapper and the
// Hono middleware end a request alike, whatever its handler does: each
// scenario below runs against both.

import assert from "node:assert/strict";
import { Hono } from "npm:hono@^4";
import {
  type BackgroundTasks,
  defineTask,
  type TaskBackend,
  type TaskControls,
  withBackgroundTasks,
  type WithBackgroundTasksOptions,
} from "../../mod.ts";
import { backgroundTasks, type BackgroundTasksVariables } from "../../hono.ts";
import { guardedTest, sentInfo } from "../_helpers/common.ts";

/** A handler's part, the same under both adapters: it gets the request's tasks. */
type Route = (tasks: BackgroundTasks) => Response | Promise<Response>;

/**
 * An adapter serving `route`: `answer()` handles one request and resolves
 * with the response, or with the error the server saw instead.
 */
type Served = { answer(): Promise<unknown>; controls: TaskControls };

const adapters: [
  string,
  (options: WithBackgroundTasksOptions, route: Route) => Served,
][] = [
  ["withBackgroundTasks()", (options, route) => {
    const handler = withBackgroundTasks(
      (_request, _info, tasks) => route(tasks),
      options,
    );
    return {
      controls: handler,
      async answer() {
        try {
          return await handler(new Request("http://localhost/"), sentInfo());
        } catch (error) {
          return error;
        }
      },
    };
  }],
  ["the Hono middleware", (options, route) => {
    const middleware = backgroundTasks(options);
    const app = new Hono<{ Variables: BackgroundTasksVariables }>();
    app.use(middleware);
    app.get("/", (c) => route(c.var.backgroundTasks));
    let seen: unknown;
    app.onError((error, c) => {
      seen = error;
      return c.text(error.message, 500);
    });
    return {
      controls: middleware,
      async answer() {
        const response = await app.request("/");
        if (seen === undefined) return response;
        await response.body?.cancel();
        return seen;
      },
    };
  }],
];

const job = defineTask(function job() {}, { name: "job" });

/** A backend whose every store fails with `failure`. */
function failingBackend(failure: Error): TaskBackend {
  return { accept() {}, enqueue: () => Promise.reject(failure) };
}

for (const [adapter, serve] of adapters) {
  guardedTest(
    `${adapter} discards the tasks of a handler that throws`,
    async () => {
      let ran = 0;
      const failure = new Error("handler failed");
      const { answer, controls } = serve({}, (tasks) => {
        tasks.addTask(() => ran++);
        throw failure;
      });
      assert.equal(await answer(), failure);
      await controls.drain();
      const { pending, discarded } = controls.stats;
      assert.deepEqual({ ran, pending, discarded }, {
        ran: 0,
        pending: 0,
        discarded: 1,
      });
    },
  );

  guardedTest(
    `${adapter} discards the tasks of a handler that answers with something other than a Response`,
    async () => {
      let ran = 0;
      const { answer, controls } = serve({}, (tasks) => {
        tasks.addTask(() => ran++);
        return Promise.resolve("not a response" as unknown as Response);
      });
      assert.ok(!((await answer()) instanceof Response));
      await controls.drain();
      const { pending, discarded } = controls.stats;
      assert.deepEqual({ ran, pending, discarded }, {
        ran: 0,
        pending: 0,
        discarded: 1,
      });
    },
  );

  guardedTest(
    `${adapter} fails a response whose tasks the backend cannot store, cancelling its body`,
    async () => {
      const failure = new Error("already queued");
      const cancelled = Promise.withResolvers<unknown>();
      const { answer, controls } = serve(
        { backend: failingBackend(failure) },
        (tasks) => {
          tasks.addTask(job);
          return new Response(
            new ReadableStream({
              cancel: (reason) => cancelled.resolve(reason),
            }),
          );
        },
      );
      const answered = await answer();
      assert.ok(answered instanceof Error);
      assert.equal(
        answered.message,
        "Cannot respond as the backend could not store the request's tasks",
      );
      assert.equal(answered.cause, failure);
      await cancelled.promise;
      await controls.drain();
      const { pending, discarded, handedOver } = controls.stats;
      assert.deepEqual({ pending, discarded, handedOver }, {
        pending: 0,
        discarded: 1,
        handedOver: 0,
      });
    },
  );

  guardedTest(
    `${adapter} answers once the backend has stored the tasks, with the handler's response`,
    async () => {
      const stored: string[] = [];
      const backend: TaskBackend = {
        accept() {},
        enqueue(chain) {
          stored.push(...chain.tasks.map((task) => task.name));
          return Promise.resolve();
        },
      };
      const { answer, controls } = serve({ backend }, (tasks) => {
        tasks.addTask(job);
        return new Response("accepted", { status: 202 });
      });
      const answered = await answer();
      assert.ok(answered instanceof Response);
      assert.deepEqual([answered.status, await answered.text()], [
        202,
        "accepted",
      ]);
      assert.deepEqual(stored, ["job"]);
      await controls.drain();
      assert.equal(controls.stats.handedOver, 1);
    },
  );

  guardedTest(`${adapter} runs the tasks after the response`, async () => {
    const log: string[] = [];
    const { answer, controls } = serve({}, (tasks) => {
      tasks.addTask(() => log.push("task"));
      log.push("response");
      return new Response("ok");
    });
    const answered = await answer();
    assert.ok(answered instanceof Response);
    assert.equal(await answered.text(), "ok");
    await controls.drain();
    assert.deepEqual(log, ["response", "task"]);
    assert.equal(controls.stats.succeeded, 1);
  });
}

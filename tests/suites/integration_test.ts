// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Integration tests against a real `Deno.serve` on 127.0.0.1.

import assert from "node:assert/strict";
import { type BackgroundTasks, withBackgroundTasks } from "../../mod.ts";
import { guardedTest, listen, macrotasks } from "../_helpers/common.ts";

/** Epoch milliseconds with sub-millisecond precision, comparable across processes. */
function now(): number {
  return performance.timeOrigin + performance.now();
}

/** Closes a streamed body the test held open, and reads it to its end. */
async function endBody(
  stream: ReadableStreamDefaultController<Uint8Array>,
  reader: ReadableStreamDefaultReader<Uint8Array>,
): Promise<void> {
  stream.close();
  while (!(await reader.read()).done) {
    // Read to the end.
  }
}

/** Closes a body left open, if it is, so that shutdown() need not wait. */
function closeQuietly(
  stream: ReadableStreamDefaultController<Uint8Array> | undefined,
): void {
  try {
    stream?.close();
  } catch {
    // Already closed.
  }
}

guardedTest(
  "a task that blocks the event loop does not delay its own response",
  async () => {
    const blockFor = 300;
    let taskStartedAt = 0;
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(function blockEventLoop() {
        taskStartedAt = now();
        const until = performance.now() + blockFor;
        while (performance.now() < until) {
          // Busy: nothing else in this process runs meanwhile.
        }
      });
      return new Response("sent before the task");
    });
    const { server, url } = listen(handler);
    try {
      // The client runs in a process of its own, so the blocked event loop
      // cannot delay the moment it records.
      const client = await new Deno.Command(Deno.execPath(), {
        args: [
          "eval",
          `const sentAt = performance.timeOrigin + performance.now();
         const response = await fetch(${JSON.stringify(url)});
         const body = await response.text();
         const receivedAt = performance.timeOrigin + performance.now();
         console.log(JSON.stringify({ body, sentAt, receivedAt }));`,
        ],
        stdout: "piped",
        stderr: "inherit",
      }).output();
      assert.equal(client.code, 0);
      const { body, sentAt, receivedAt } = JSON.parse(
        new TextDecoder().decode(client.stdout),
      );
      assert.equal(body, "sent before the task");
      await handler.drain();
      assert.ok(taskStartedAt > 0, "the task did not run");
      // Had the task run before the response was written, the client would
      // have waited for the whole block. The client's clock reading happens
      // in another process, so the comparison allows it a little scheduling
      // slack, far below the block's length.
      assert.ok(
        receivedAt < taskStartedAt + blockFor / 3,
        `received ${
          (receivedAt - taskStartedAt).toFixed(1)
        } ms after the task started`,
      );
      assert.ok(
        receivedAt - sentAt < blockFor,
        `the response took ${(receivedAt - sentAt).toFixed(1)} ms`,
      );
    } finally {
      await server.shutdown();
    }
  },
);

guardedTest(
  "tasks start after a streamed body has been sent in full",
  async () => {
    const encoder = new TextEncoder();
    const log: string[] = [];
    let stream: ReadableStreamDefaultController<Uint8Array> | undefined;
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(() => log.push("task"));
      return new Response(
        new ReadableStream<Uint8Array>({
          start(controller) {
            stream = controller;
          },
        }),
      );
    });
    const { server, url } = listen(handler);
    try {
      const response = await fetch(url);
      const reader = response.body!.getReader();
      stream!.enqueue(encoder.encode("first chunk"));
      const first = await reader.read();
      assert.equal(new TextDecoder().decode(first.value), "first chunk");

      // The body is still open: a wrapper that started tasks when the handler
      // returned would have run them by now, a macrotask after. The task
      // waits, counted as queued.
      assert.equal(log.length, 0, "a task ran while the body was open");
      assert.deepEqual(
        [handler.stats.queued, handler.stats.running, handler.stats.succeeded],
        [1, 0, 0],
      );

      stream!.enqueue(encoder.encode("last chunk"));
      log.push("body closed");
      await endBody(stream!, reader);
      await handler.drain();
      assert.deepEqual(log, ["body closed", "task"]);
    } finally {
      // On a failed assertion the body is still open, and shutdown() would
      // wait for it forever.
      closeQuietly(stream);
      await server.shutdown();
    }
  },
);

guardedTest(
  "a first task added while a streamed body is sent, though the handler added none, waits for the body",
  async () => {
    // The wrapper checks whether the request is closed before waiting for
    // info.completed: a request whose body still streams is open.
    const encoder = new TextEncoder();
    const log: string[] = [];
    let later: BackgroundTasks | undefined;
    let stream: ReadableStreamDefaultController<Uint8Array> | undefined;
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      later = tasks;
      return new Response(
        new ReadableStream<Uint8Array>({
          start(controller) {
            stream = controller;
          },
        }),
      );
    });
    const { server, url } = listen(handler);
    try {
      const response = await fetch(url);
      const reader = response.body!.getReader();
      stream!.enqueue(encoder.encode("first chunk"));
      await reader.read();
      later!.addTask(() => log.push("task"));
      // A chain that took the request for closed would have run the task by
      // now: it starts a macrotask after it is ready.
      await macrotasks(5);
      assert.equal(log.length, 0, "a task ran while the body was open");
      assert.deepEqual([handler.stats.queued, handler.stats.running], [1, 0]);

      log.push("body closed");
      await endBody(stream!, reader);
      await handler.drain();
      assert.deepEqual(log, ["body closed", "task"]);
    } finally {
      closeQuietly(stream);
      await server.shutdown();
    }
  },
);

guardedTest(
  "concurrent requests each run their own tasks once, in order",
  async () => {
    const requests = 200;
    const runs = new Map<number, number[]>();
    const handler = withBackgroundTasks(async (request, _info, tasks) => {
      const id = Number(new URL(request.url).searchParams.get("id"));
      const record = async (step: number) => {
        await Promise.resolve();
        runs.set(id, [...runs.get(id) ?? [], step]);
      };
      tasks.addTask(record, 1);
      await Promise.resolve();
      tasks.addTask(record, 2);
      tasks.addTask((step: number) => void record(step), 3);
      return new Response(String(id));
    });
    const { server, url } = listen(handler);
    try {
      const bodies = await Promise.all(
        Array.from({ length: requests }, async (_, id) => {
          const response = await fetch(`${url}/?id=${id}`);
          return await response.text();
        }),
      );
      assert.deepEqual(
        bodies,
        Array.from({ length: requests }, (_, id) => `${id}`),
      );
    } finally {
      await server.shutdown();
    }
    await handler.drain();
    // The third task's inner promise is not awaited by the chain; let it land.
    await Promise.resolve();
    assert.equal(runs.size, requests);
    for (const [id, steps] of runs) {
      assert.deepEqual(
        steps,
        [1, 2, 3],
        `request ${id}`,
      );
    }
    assert.equal(handler.stats.pending, 0);
  },
);

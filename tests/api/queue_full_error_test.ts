// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import {
  type BackgroundTasks,
  QueueFullError,
  withBackgroundTasks,
} from "../../mod.ts";
import { guardedTest, sentInfo } from "../_helpers/common.ts";

Deno.test("QueueFullError names the refused task and the limit", () => {
  const error = new QueueFullError("sendEmail", 100);
  assert.ok(error instanceof Error);
  assert.equal(error.name, "QueueFullError");
  assert.equal(
    error.message,
    `Cannot add task "sendEmail" as 100 tasks are already pending, the 'maxPending' limit`,
  );
  assert.equal(error.task, "sendEmail");
  assert.equal(error.limit, 100);
});

guardedTest(
  "maxPending refuses tasks beyond it with a QueueFullError, and accepted ones still run",
  async () => {
    const gate = Promise.withResolvers<void>();
    const ran: string[] = [];
    const statuses: number[] = [];
    const handler = withBackgroundTasks((request, _info, tasks) => {
      const id = new URL(request.url).searchParams.get("id")!;
      try {
        tasks.addTask(async function work(label: string) {
          await gate.promise;
          ran.push(label);
        }, `${id}a`);
        tasks.addTask(async function work(label: string) {
          await gate.promise;
          ran.push(label);
        }, `${id}b`);
      } catch (error) {
        if (!(error instanceof QueueFullError)) throw error;
        return new Response("Busy", {
          status: 503,
          headers: { "retry-after": "1" },
        });
      }
      return new Response("Accepted", { status: 202 });
    }, { maxPending: 3 });

    for (const id of ["1", "2", "3"]) {
      const response = await handler(
        new Request(`http://localhost/?id=${id}`),
        sentInfo(),
      );
      statuses.push(response.status);
      await response.body?.cancel();
    }
    assert.deepEqual(statuses, [202, 503, 503]);
    assert.deepEqual(handler.stats.refused, 2);
    assert.equal(handler.stats.pending, 3);

    gate.resolve();
    await handler.drain();
    // Request 2's first task had been accepted before its second was refused:
    // nothing accepted is dropped.
    assert.deepEqual(ran.sort(), ["1a", "1b", "2a"]);

    // Room again once the tasks have run.
    const response = await handler(
      new Request("http://localhost/?id=4"),
      sentInfo(),
    );
    assert.equal(response.status, 202);
    await response.body?.cancel();
    await handler.drain();
  },
);

guardedTest("maxPending also bounds tasks added by running tasks", async () => {
  const refused: unknown[] = [];
  let captured: BackgroundTasks | undefined;
  const handler = withBackgroundTasks((_request, _info, tasks) => {
    captured = tasks;
    tasks.addTask(function spawn() {
      tasks.addTask(() => {});
      tasks.addTask(() => {});
    });
    return new Response("ok");
  }, { maxPending: 2, onTaskError: (error) => void refused.push(error) });
  handler(new Request("http://localhost/"), sentInfo());
  await handler.drain();
  assert.equal(refused.length, 1);
  assert.ok(refused[0] instanceof QueueFullError);
  assert.equal(captured!.size, 2);
  assert.equal(handler.stats.refused, 1);
});

// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// kvBackend() on a Deno KV that cannot queue messages: a remote database
// reached through KV Connect, as Deno Deploy's is. Deno's own client is
// used, against a server of the test's (tests/_helpers/kv_connect.ts).

import assert from "node:assert/strict";
import { defineTask, withBackgroundTasks } from "../../mod.ts";
import { kvBackend } from "../../kv.ts";
import { callHandler } from "../../testing.ts";
import { consoleLines, guardedTest, within } from "../_helpers/common.ts";
import {
  KV_CONNECT_ENQUEUE_ERROR,
  openKvConnect,
} from "../_helpers/kv_connect.ts";

const sendEmail = defineTask((_context, _to: string) => {}, {
  name: "sendEmail",
});

const CANNOT_QUEUE =
  /^Cannot store the request's tasks as this Deno KV cannot queue messages: KV Connect and Deno Deploy do not support enqueue\(\), so the KV backend needs a database file on this host \(Deno\.openKv\(path\)\); on Deno Deploy, use the BullMQ backend on PostgreSQL or Redis \(bullmqBackend\(\) from @afterward\/background-tasks\/bullmq\)$/;

/** The error a response failed with, its cause, and the platform's error. */
function causes(error: unknown): string[] {
  const messages: string[] = [];
  for (let e = error; e instanceof Error; e = e.cause) messages.push(e.message);
  return messages;
}

guardedTest(
  "kvBackend() on a KV that cannot queue (KV Connect, Deno Deploy) fails the first store, saying why and what to use instead",
  async () => {
    using console = consoleLines();
    await using kv = await openKvConnect();
    const backend = kvBackend({ kv, tasks: [sendEmail] });
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(sendEmail, "a@example.com");
      return new Response("Accepted", { status: 202 });
    }, { backend });

    for (const _request of [1, 2]) {
      const error = await callHandler(handler, "/signup").then(
        () => assert.fail("the response went out"),
        (error) => error,
      );
      const [message, why, platform] = causes(error);
      assert.equal(
        message,
        "Cannot respond as the backend could not store the request's tasks",
      );
      assert.match(why!, CANNOT_QUEUE);
      assert.equal(platform, KV_CONNECT_ENQUEUE_ERROR);
    }
    assert.equal(handler.stats.discarded, 2);
    assert.equal(handler.stats.pending, 0);
    // It does not listen: Deno's listenQueue() on KV Connect never settles,
    // even once the database is closed, and would keep the process alive
    // (the test's op sanitizer fails on it).
    await within(console.seen(/cannot run tasks/), 5_000, "the line");
    assert.deepEqual(console.lines, [
      "The KV backend cannot run tasks as this Deno KV cannot queue messages: KV Connect and Deno Deploy do not support listenQueue(), so the KV backend needs a database file on this host (Deno.openKv(path)); on Deno Deploy, use the BullMQ backend on PostgreSQL or Redis (bullmqBackend() from @afterward/background-tasks/bullmq)",
    ]);
    await backend.close();
  },
);

guardedTest(
  "kvBackend() on a KV that cannot queue reports a chain handed over after its response as failed, saying why",
  async () => {
    await using kv = await openKvConnect();
    const backend = kvBackend({ kv, tasks: [sendEmail], listen: false });
    const reported: string[][] = [];
    const handler = withBackgroundTasks((_request, _info, tasks) => {
      tasks.addTask(sendEmail, "a@example.com");
      return new Response("Accepted", { status: 202 });
    }, {
      backend,
      handOver: "after-response",
      onTaskError: (error, info) =>
        void reported.push([info.name, ...causes(error)]),
    });

    const { response, tasks } = await callHandler(handler, "/signup");
    assert.equal(response.status, 202);
    await tasks;
    assert.equal(reported.length, 1);
    const [name, why, platform] = reported[0]!;
    assert.equal(name, "sendEmail");
    assert.match(why!, CANNOT_QUEUE);
    assert.equal(platform, KV_CONNECT_ENQUEUE_ERROR);
    await backend.close();
  },
);

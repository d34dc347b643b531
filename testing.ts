// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * Helpers for testing handlers that add background tasks, without a server.
 *
 * {@linkcode callHandler} calls a handler made by `withBackgroundTasks` and
 * returns its response with a promise of the request's task results;
 * {@linkcode fakeServeHandlerInfo} gives a handler an `info` whose
 * `completed` the test settles, to decide when tasks may start or to play a
 * client that went away; {@linkcode trackTasks} fails a test that ends with
 * tasks it did not wait for.
 *
 * ```ts
 * import { withBackgroundTasks } from "@afterward/background-tasks";
 * import { callHandler } from "@afterward/background-tasks/testing";
 * import assert from "node:assert/strict";
 *
 * const sent: string[] = [];
 * const handler = withBackgroundTasks((_request, _info, tasks) => {
 *   tasks.addTask((to: string) => sent.push(to), "a@example.com");
 *   return new Response("ok");
 * });
 *
 * const { response, tasks } = await callHandler(handler, "/");
 * assert.equal(await response.text(), "ok");
 * await tasks;
 * assert.deepEqual(sent, ["a@example.com"]);
 * ```
 *
 * @module
 */

export * from "./src/http/testing.ts";

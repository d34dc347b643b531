// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * For writing a backend of your own: the shapes a backend receives from the
 * wrapper ({@linkcode BackendChain}, {@linkcode BackendTask}), the options of
 * its `enqueue()`, and the options its workers share. The backends of
 * `@afterward/background-tasks/kv` and `/bullmq` are built on them, and share
 * one admin shape, {@linkcode DurableBackend}: `failed()` lists the tasks they
 * keep as failed ({@linkcode FailedTask}), `retry(id)` runs one again.
 *
 * ```ts
 * import { defineTask, withBackgroundTasks } from "@afterward/background-tasks";
 * import type { BackendChain, TaskBackend } from "@afterward/background-tasks/backend";
 * import { callHandler } from "@afterward/background-tasks/testing";
 * import assert from "node:assert/strict";
 *
 * const stored: BackendChain[] = [];
 * const memory: TaskBackend = {
 *   accept() {},
 *   enqueue(chain) {
 *     stored.push(chain);
 *     return Promise.resolve();
 *   },
 * };
 * const ping = defineTask(() => {}, { name: "ping" });
 * const handler = withBackgroundTasks((_request, _info, tasks) => {
 *   tasks.addTask(ping);
 *   return new Response("ok");
 * }, { backend: memory });
 * await (await callHandler(handler, "/")).tasks;
 * assert.deepEqual(stored[0]?.tasks.map((task) => task.name), ["ping"]);
 * ```
 *
 * @module
 */

export * from "./src/api/task_backend.ts";

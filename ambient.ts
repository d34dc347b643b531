// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * Ambient access to the current request's tasks, opt-in.
 *
 * {@linkcode getBackgroundTasks} returns the tasks of the request being
 * handled from anywhere in its asynchronous call tree, for handlers wrapped
 * with `ambient: true`. It lives in its own entry point because it loads
 * `node:async_hooks`, which the rest of the package does without.
 *
 * ```ts ignore
 * import { serve } from "@afterward/background-tasks";
 * import { getBackgroundTasks } from "@afterward/background-tasks/ambient";
 *
 * function audit(event: string) {
 *   getBackgroundTasks().addTask(writeAuditLog, event);
 * }
 *
 * serve({ ambient: true }, async (request) => {
 *   audit(`login from ${request.headers.get("user-agent")}`);
 *   return new Response("welcome");
 * });
 * ```
 *
 * @module
 */

export * from "./src/http/get_background_tasks.ts";

// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Deno closes a request once its response has completed: its URL, headers
// and body throw "Request closed" unless read before. A task runs after
// that, so the runner refuses, as it is added, an argument that would stop
// working then; and a chain whose handler returned before it had tasks is
// scheduled by its first task, which tells a request closed meanwhile by
// its info (tests/suites/deno_behaviours_test.ts pins both behaviours).

import type { Chain } from "./_chain.ts";
import { nameOf, type Task } from "./_task.ts";
import { escapeControls } from "../api/_describe_task.ts";

/**
 * Whether a task's argument stops working once the response is sent: Deno
 * closes the request then (its URL, headers and body throw "Request
 * closed" unless read before), and a request's body stream can no longer be
 * read past what had arrived. Headers once read, and what was read from the
 * body (a Blob, FormData, JSON), stay readable, as a Response does. Any
 * ReadableStream counts: that of a request cannot be told from others, and
 * a task that needs another can open it itself.
 */
export function closesAfter(argument: unknown): boolean {
  return argument instanceof Request || argument instanceof ReadableStream;
}

export function requestArgumentError(task: Task, index: number): TypeError {
  const argument = task.args[index];
  return new TypeError(
    `Cannot add task "${escapeControls(nameOf(task))}" as argument ${index} ${
      argument instanceof Request
        ? "is a Request, which Deno closes once the response is sent: read what the task needs in the handler and pass that instead"
        : "is a ReadableStream, which a request's body is and which cannot be read once the response is sent: read it in the handler (await request.arrayBuffer(), say) and pass that instead"
    }`,
  );
}

/**
 * Whether Deno has closed the request `info` came with, its response
 * completed: its `remoteAddr` then throws, read before or not (Deno 2.9).
 * Another `info` (a test's, an adapter's) is taken as open.
 */
export function isClosed(info: Deno.ServeHandlerInfo | undefined): boolean {
  try {
    void info?.remoteAddr;
    return false;
  } catch {
    return true;
  }
}

/**
 * Takes what a `returned` chain kept of its request for its first task: its
 * method and URL are read now, if they still can be, and its info is
 * returned, unless the request is closed. Deno never settles an
 * `info.completed` first asked for after its response completed: a chain
 * whose request is closed by then goes on without waiting for it.
 */
export function takeReturned(
  chain: Chain,
): Deno.ServeHandlerInfo | undefined {
  const { pendingRequest, serveInfo } = chain;
  chain.pendingRequest = chain.serveInfo = undefined;
  if (chain.url === undefined && pendingRequest !== undefined) {
    try {
      chain.method = pendingRequest.method;
      chain.url = pendingRequest.url;
    } catch {
      // Closed: its response has completed. Reports go without the request.
    }
  }
  return isClosed(serveInfo) ? undefined : serveInfo;
}

// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import { Hono } from "npm:hono@^4";
import { fileURLToPath } from "node:url";
import { type BackgroundTasks, withBackgroundTasks } from "../../mod.ts";
import { getBackgroundTasks } from "../../ambient.ts";
import { backgroundTasks, type BackgroundTasksVariables } from "../../hono.ts";
import { guardedTest, sentInfo } from "../_helpers/common.ts";

const mod = fileURLToPath(new URL("../../mod.ts", import.meta.url));
const ambientModule = fileURLToPath(
  new URL("../../ambient.ts", import.meta.url),
);

/** Runs `code` in a fresh Deno, so no wrapper or import of this file is seen. */
async function evalFresh(code: string): Promise<string> {
  const { stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
  }).output();
  return new TextDecoder().decode(stdout).trim() +
    new TextDecoder().decode(stderr).trim();
}

guardedTest(
  "getBackgroundTasks() returns the request's tasks deep in its async call tree",
  async () => {
    const audit: string[] = [];
    async function deepHelper(user: string) {
      await new Promise((resolve) => setTimeout(resolve, 1));
      await Promise.resolve();
      getBackgroundTasks().addTask((who: string) => audit.push(who), user);
    }
    let seen: BackgroundTasks | undefined;
    const handler = withBackgroundTasks(async (request, _info, tasks) => {
      seen = tasks;
      await deepHelper(new URL(request.url).searchParams.get("user")!);
      assert.equal(getBackgroundTasks(), tasks);
      return new Response("ok");
    }, { ambient: true });

    // Interleaved requests each find their own tasks.
    await Promise.all(["ada", "grace", "linus"].map((user) =>
      handler(
        new Request(`http://localhost/?user=${user}`),
        sentInfo(),
      )
    ));
    await handler.drain();
    assert.deepEqual(audit.sort(), ["ada", "grace", "linus"]);
    assert.equal(seen!.size, 1);
  },
);

guardedTest(
  "getBackgroundTasks() inside a running task returns that task's own chain",
  async () => {
    const log: string[] = [];
    const handler = withBackgroundTasks((request, _info, tasks) => {
      const id = new URL(request.url).searchParams.get("id")!;
      tasks.addTask(async (first: string) => {
        await Promise.resolve();
        log.push(first);
        getBackgroundTasks().addTask(
          (next: string) => log.push(next),
          `${id} added`,
        );
      }, `${id} first`);
      return new Response("ok");
    }, { ambient: true });
    // Both chains start on the same timer, each in its own context.
    handler(new Request("http://localhost/?id=a"), sentInfo());
    handler(new Request("http://localhost/?id=b"), sentInfo());
    await handler.drain();
    assert.deepEqual(log.sort(), ["a added", "a first", "b added", "b first"]);
    assert.equal(handler.stats.succeeded, 4);
  },
);

guardedTest(
  "getBackgroundTasks() works under the Hono middleware with ambient",
  async () => {
    const log: string[] = [];
    const middleware = backgroundTasks({ ambient: true });
    const app = new Hono<{ Variables: BackgroundTasksVariables }>();
    app.use(middleware);
    app.get("/", async (c) => {
      await Promise.resolve();
      assert.equal(getBackgroundTasks(), c.var.backgroundTasks);
      getBackgroundTasks().addTask(() => log.push("from a helper"));
      return c.text("ok");
    });
    await (await app.request("/")).text();
    await middleware.drain();
    assert.deepEqual(log, ["from a helper"]);
  },
);

Deno.test("getBackgroundTasks() outside a request throws", () => {
  withBackgroundTasks(() => new Response(), { ambient: true });
  assert.throws(() => getBackgroundTasks(), {
    name: "Error",
    message:
      "Cannot get background tasks outside a request handled with 'ambient: true'",
  });
});

Deno.test("getBackgroundTasks() says when no handler was wrapped with ambient", async () => {
  const output = await evalFresh(`
    const { getBackgroundTasks } = await import(${
    JSON.stringify(ambientModule)
  });
    try { getBackgroundTasks(); } catch (error) { console.log(error.message); }
  `);
  assert.equal(
    output,
    "Cannot get background tasks as no handler was wrapped with 'ambient: true'",
  );
});

Deno.test("ambient: true without the ambient module is refused when wrapping", async () => {
  const output = await evalFresh(`
    const { withBackgroundTasks } = await import(${JSON.stringify(mod)});
    try {
      withBackgroundTasks(() => new Response(), { ambient: true });
    } catch (error) { console.log(error.name + ": " + error.message); }
  `);
  assert.equal(
    output,
    `TypeError: Cannot wrap handler as 'ambient' needs "@afterward/background-tasks/ambient": import getBackgroundTasks from it`,
  );
});

Deno.test("ambient must be a boolean", () => {
  assert.throws(
    () =>
      withBackgroundTasks(() => new Response(), {
        ambient: "yes" as unknown as boolean,
      }),
    {
      name: "TypeError",
      message:
        `Cannot wrap handler as 'ambient' must be a boolean: current value is "yes"`,
    },
  );
});

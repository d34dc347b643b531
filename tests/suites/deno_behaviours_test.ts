// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// What the library relies on in Deno that Deno does not document, each
// pinned here, so that a Deno upgrade that changes one fails a test named
// after it instead of a feature far from the cause. CONTRIBUTING.md lists
// them with the code that relies on each; a test that fails here means that
// code must be looked at again, not that this test must be changed.

import assert from "node:assert/strict";
import { listen } from "../_helpers/common.ts";

/** Serves one request, keeping its request and info, and shuts down. */
async function servedOnce(): Promise<{
  request: Request;
  info: Deno.ServeHandlerInfo;
  readBefore: boolean;
}> {
  let kept: { request: Request; info: Deno.ServeHandlerInfo } | undefined;
  const { server, url } = listen((request, info) => {
    kept = { request, info };
    return new Response("ok");
  });
  const response = await fetch(`${url}/path?query`);
  assert.equal(await response.text(), "ok");
  // Once shut down, every response has completed.
  await server.shutdown();
  return { ...kept!, readBefore: false };
}

/** Whether `promise` settles before a timer of `ms` fires. */
function settlesWithin(
  promise: Promise<unknown>,
  ms: number,
): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    const settled = () => {
      clearTimeout(timer);
      resolve(true);
    };
    promise.then(settled, settled);
  });
}

Deno.test("Deno: info.remoteAddr throws once the request's response has completed, read before or not", async (t) => {
  await t.step("not read before", async () => {
    const { info } = await servedOnce();
    assert.throws(() => info.remoteAddr);
  });
  await t.step("read while the handler ran", async () => {
    let info: Deno.ServeHandlerInfo | undefined;
    const { server, url } = listen((_request, served) => {
      info = served;
      void served.remoteAddr;
      return new Response("ok");
    });
    await (await fetch(url)).text();
    await server.shutdown();
    assert.throws(() => info!.remoteAddr);
  });
});

Deno.test("Deno: the request is closed once its response has completed: its URL throws 'Request closed'", async () => {
  const { request } = await servedOnce();
  assert.throws(() => request.url, {
    name: "TypeError",
    message: "Request closed",
  });
});

Deno.test("Deno: a request's headers got while the handler ran stay readable once its response has completed, unread or not", async () => {
  let headers: Headers | undefined;
  const { server, url } = listen((request) => {
    headers = request.headers;
    return new Response("ok");
  });
  await (await fetch(url, { headers: { "x-order": "42" } })).text();
  await server.shutdown();
  assert.equal(headers!.get("x-order"), "42");
});

Deno.test("Deno: info.completed first read after the response completed never settles", async () => {
  const { info } = await servedOnce();
  // A bound, not a wait for work: the claim is that nothing ever comes.
  assert.equal(await settlesWithin(info.completed, 200), false);
});

Deno.test("Deno: info.completed read while the handler ran resolves once the response is sent", async () => {
  let completed: Promise<void> | undefined;
  const { server, url } = listen((_request, info) => {
    completed = info.completed;
    return new Response("ok");
  });
  await (await fetch(url)).text();
  await completed;
  await server.shutdown();
});

Deno.test("Deno: under deno test, the first setTimeout() of the process runs the pending microtasks before it returns", async () => {
  // In a process of its own: only the first timer does it.
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(
      `${dir}/probe_test.ts`,
      `Deno.test("probe", () => {
        let ran = false;
        Promise.resolve().then(() => { ran = true; });
        clearTimeout(setTimeout(() => {}, 1_000));
        console.log("first timer ran the microtask:", ran);
      });`,
    );
    const { stdout } = await new Deno.Command(Deno.execPath(), {
      args: ["test", "--no-check", `${dir}/probe_test.ts`],
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "null",
    }).output();
    assert.match(
      new TextDecoder().decode(stdout),
      /first timer ran the microtask: true/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

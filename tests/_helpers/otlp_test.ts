// Copyright 2026 the @afterward/background-tasks authors. MIT license.

import assert from "node:assert/strict";
import {
  decodeAttributes,
  flattenMetrics,
  flattenTraces,
  type OtlpSpan,
  startOtlpReceiver,
} from "./otlp.ts";

// Serves until its standard input closes; "/" fetches "/inner" from itself.
const program = `
const server = Deno.serve({
  hostname: "127.0.0.1",
  port: 0,
  onListen({ port }) { console.log(port); },
}, async (request) => {
  const url = new URL(request.url);
  if (url.pathname === "/inner") return new Response("inner");
  const response = await fetch(new URL("/inner", url));
  return new Response(await response.text());
});
for await (const _ of Deno.stdin.readable) { /* until closed */ }
await server.shutdown();
`;

async function firstLine(stream: ReadableStream<Uint8Array>): Promise<string> {
  let text = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    text += chunk;
    if (text.includes("\n")) break;
  }
  return text.split("\n")[0]!;
}

Deno.test("startOtlpReceiver() receives a request's server span and its fetch's client span in one trace", async () => {
  await using receiver = startOtlpReceiver();
  const path = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(path, program);
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-net=127.0.0.1", path],
      env: { ...receiver.env, NO_COLOR: "1" },
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    try {
      const port = await firstLine(child.stdout);
      const response = await fetch(`http://127.0.0.1:${port}/`);
      assert.equal(await response.text(), "inner");

      const isOuter = (span: OtlpSpan) =>
        span.kind === "server" && span.attributes["url.path"] === "/";
      const isClient = (span: OtlpSpan) => span.kind === "client";
      const spans = await receiver.waitForSpans((spans) =>
        spans.some(isOuter) && spans.some(isClient)
      );
      const server = spans.find(isOuter)!;
      const client = spans.find(isClient)!;
      assert.equal(client.traceId, server.traceId);
      assert.equal(client.parentSpanId, server.spanId);
      assert.equal(server.scope, "deno");
      assert.equal(server.resource["process.runtime.name"], "deno");
    } finally {
      await child.stdin.close();
      await child.status;
    }
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("waitForSpans() rejects after its timeout, saying what was received", async () => {
  await using receiver = startOtlpReceiver();
  await assert.rejects(
    receiver.waitForSpans((spans) => spans.length > 0, 10),
    {
      name: "Error",
      message:
        "The awaited telemetry did not arrive within 10 ms; received:\n  ",
    },
  );
});

Deno.test("close() rejects the waits still pending", async () => {
  const receiver = startOtlpReceiver();
  const rejected = assert.rejects(receiver.waitForMetrics(() => false), {
    name: "Error",
    message:
      "The receiver closed before the awaited telemetry arrived; received:\n  ",
  });
  await receiver.close();
  await rejected;
});

Deno.test("decodeAttributes() decodes every OTLP value type", () => {
  assert.deepEqual(
    decodeAttributes([
      { key: "s", value: { stringValue: "x" } },
      { key: "i", value: { intValue: "200" } },
      { key: "d", value: { doubleValue: 1.5 } },
      { key: "b", value: { boolValue: false } },
      {
        key: "a",
        value: {
          arrayValue: { values: [{ stringValue: "p" }, { intValue: 1 }] },
        },
      },
      {
        key: "kv",
        value: {
          kvlistValue: { values: [{ key: "k", value: { boolValue: true } }] },
        },
      },
      { key: "empty", value: {} },
    ]),
    {
      s: "x",
      i: 200,
      d: 1.5,
      b: false,
      a: ["p", 1],
      kv: { k: true },
      empty: null,
    },
  );
});

Deno.test("flattenTraces() and flattenMetrics() flatten OTLP JSON as Deno sends it", () => {
  const resource = { attributes: [{ key: "r", value: { stringValue: "v" } }] };
  const [span] = flattenTraces({
    resourceSpans: [{
      resource,
      scopeSpans: [{
        scope: { name: "t" },
        spans: [{
          traceId: "53fd47cb75bfbe3341684d8fff13003d",
          spanId: "8710eaf54681e24b",
          parentSpanId: "",
          name: "task",
          kind: 1,
          startTimeUnixNano: "1796160128422433334",
          endTimeUnixNano: "1796160128422539170",
          attributes: [{ key: "n", value: { doubleValue: 3.0 } }],
          status: { code: 2, message: "bad" },
          events: [{
            name: "exception",
            attributes: [{
              key: "exception.message",
              value: { stringValue: "boom" },
            }],
          }],
        }],
      }],
    }],
  });
  assert.deepEqual(span, {
    traceId: "53fd47cb75bfbe3341684d8fff13003d",
    spanId: "8710eaf54681e24b",
    parentSpanId: undefined,
    name: "task",
    kind: "internal",
    attributes: { n: 3 },
    status: { code: 2, message: "bad" },
    events: [{
      name: "exception",
      attributes: { "exception.message": "boom" },
    }],
    links: [],
    startTimeUnixNano: 1796160128422433334n,
    endTimeUnixNano: 1796160128422539170n,
    resource: { r: "v" },
    scope: "t",
  });

  const points = flattenMetrics({
    resourceMetrics: [{
      resource,
      scopeMetrics: [{
        scope: { name: "m" },
        metrics: [
          {
            name: "h",
            unit: "ms",
            histogram: {
              dataPoints: [{
                attributes: [{ key: "k", value: { stringValue: "a" } }],
                count: "2",
                sum: 7.5,
              }],
            },
          },
          {
            name: "c",
            unit: "1",
            sum: { isMonotonic: true, dataPoints: [{ asDouble: 2 }] },
          },
          { name: "g", gauge: { dataPoints: [{ asInt: "4" }] } },
        ],
      }],
    }],
  });
  assert.deepEqual(points, [
    {
      name: "h",
      unit: "ms",
      kind: "histogram",
      attributes: { k: "a" },
      count: 2,
      sum: 7.5,
      resource: { r: "v" },
      scope: "m",
    },
    {
      name: "c",
      unit: "1",
      kind: "sum",
      attributes: {},
      value: 2,
      monotonic: true,
      resource: { r: "v" },
      scope: "m",
    },
    {
      name: "g",
      unit: "",
      kind: "gauge",
      attributes: {},
      value: 4,
      resource: { r: "v" },
      scope: "m",
    },
  ]);
});

// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * Traces: a request and the tasks it left behind, in one trace, through
 * Deno's built-in OpenTelemetry. This program is its own collector: it
 * receives OTLP/HTTP JSON on a free port, starts itself again as the server
 * with `OTEL_DENO=true` pointed at it, sends `POST /orders/42`, and prints
 * the trace it received as a tree. The order's tasks save it, then call a
 * warehouse service with `fetch` (busy at the first attempt, retried).
 *
 *   deno task example:tracing
 *   deno run --allow-net=127.0.0.1 --allow-env --allow-run --allow-read examples/tracing.ts
 *
 * `--allow-run` and `--allow-read` to start Deno itself; `--allow-env` to
 * read and pass on the OpenTelemetry settings. With a real collector (the
 * Grafana LGTM image, Jaeger), run your server with `OTEL_DENO=true` and
 * `OTEL_EXPORTER_OTLP_ENDPOINT` instead: nothing else changes.
 *
 * @module
 */

import { defineTask, withBackgroundTasks } from "../mod.ts";

if (Deno.env.get("OTEL_DENO") === "true") await serveOrders();
else await collect();

/** The server, run with Deno's telemetry on: it prints its port. */
async function serveOrders(): Promise<void> {
  let port = 0;
  let busy = true;

  function saveOrder(order: string): void {
    // Stands in for a database write.
    void order;
  }

  const notifyWarehouse = defineTask(async (_context, order: string) => {
    const response = await fetch(`http://127.0.0.1:${port}/warehouse`, {
      method: "POST",
      body: order,
    });
    await response.body?.cancel();
    if (!response.ok) throw new Error(`warehouse answered ${response.status}`);
  }, { name: "notifyWarehouse", retry: { maxAttempts: 2, minDelay: 10 } });

  const handler = withBackgroundTasks((request, _info, tasks) => {
    const { pathname } = new URL(request.url);
    if (pathname === "/warehouse") {
      // Busy once, so that the first attempt fails and is retried.
      const status = busy ? 503 : 204;
      busy = false;
      return new Response(null, { status });
    }
    const order = pathname.split("/").at(-1)!;
    tasks.addTask(saveOrder, order);
    tasks.addTask(notifyWarehouse, order);
    return Response.json({ order, status: "accepted" }, { status: 202 });
  }, { onTaskError() {} });

  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    handler,
  );
  port = server.addr.port;
  console.log(port);
  // Stops, drained, when the collector closes its end of stdin.
  await Deno.stdin.readable.pipeTo(new WritableStream());
  await server.shutdown();
  await handler.drain();
}

/** An exported span, as much of it as the tree shows. */
interface Span {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: { key: string; value: Record<string, unknown> }[];
  status?: { code?: number; message?: string };
}

/** Receives the server's spans, runs one request, and prints its trace. */
async function collect(): Promise<void> {
  const spans: Span[] = [];
  const complete = Promise.withResolvers<void>();
  // Two attempts of notifyWarehouse, saveOrder, and the requests.
  const isComplete = () =>
    spans.filter((span) => span.name === "task notifyWarehouse").length ===
      2 && spans.some((span) => span.name === "task saveOrder");
  const collector = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (request) => {
      if (new URL(request.url).pathname === "/v1/traces") {
        const body = await request.json();
        for (const resource of body.resourceSpans ?? []) {
          for (const scope of resource.scopeSpans ?? []) {
            spans.push(...scope.spans ?? []);
          }
        }
        if (isComplete()) complete.resolve();
      } else await request.body?.cancel();
      return Response.json({});
    },
  );
  const server = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net=127.0.0.1",
      "--allow-env",
      import.meta.filename!,
    ],
    env: {
      OTEL_DENO: "true",
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${collector.addr.port}`,
      OTEL_SERVICE_NAME: "orders",
      // Export every 20 ms rather than every 5 s, for a prompt example.
      OTEL_BSP_SCHEDULE_DELAY: "20",
    },
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  try {
    const lines = server.stdout.pipeThrough(new TextDecoderStream());
    const reader = lines.getReader();
    const port = (await reader.read()).value!.trim();
    reader.releaseLock();
    void lines.pipeTo(new WritableStream());
    const response = await fetch(`http://127.0.0.1:${port}/orders/42`, {
      method: "POST",
    });
    console.log(`POST /orders/42 answered ${response.status}`);
    await response.body?.cancel();
    await complete.promise;
  } finally {
    await server.stdin.close();
    await server.status;
    await collector.shutdown();
  }
  const order = spans.find((span) =>
    span.kind === 2 && span.name.startsWith("POST") &&
    attribute(span, "url.path") === "/orders/42"
  )!;
  console.log(`\ntrace ${order.traceId}`);
  print(spans.filter((span) => span.traceId === order.traceId), order, "");
}

/** Prints `span` and its children, as a tree, times from the trace's start. */
function print(trace: Span[], span: Span, indent: string): void {
  const start = (span: Span) => BigInt(span.startTimeUnixNano);
  const origin = trace.reduce((min, span) => {
    const at = start(span);
    return at < min ? at : min;
  }, start(span));
  const line = (span: Span, prefix: string) => {
    const ms = (nanos: bigint) => (Number(nanos) / 1e6).toFixed(1);
    const details = [
      "background_task.attempt",
      "background_task.outcome",
      "background_task.will_retry",
      "http.response.status_code",
    ].map((key) => [key.split(".").at(-1), attribute(span, key)])
      .filter(([, value]) => value !== undefined)
      .map(([key, value]) => `${key}=${value}`);
    if (span.status?.code === 2) {
      details.push(
        span.status.message ? `error "${span.status.message}"` : "error",
      );
    }
    const name = span.kind === 2 || span.kind === 3
      ? `${span.name} ${attribute(span, "url.path")}`
      : span.name;
    console.log(
      `${prefix}${name}  +${ms(start(span) - origin)} ms, ${
        ms(BigInt(span.endTimeUnixNano) - start(span))
      } ms  ${details.join(" ")}`.trimEnd(),
    );
  };
  const walk = (span: Span, indent: string, last: boolean, root: boolean) => {
    line(span, root ? "" : `${indent}${last ? "└─ " : "├─ "}`);
    const children = trace
      .filter((child) => child.parentSpanId === span.spanId)
      .sort((a, b) => Number(start(a) - start(b)));
    const next = root ? "" : `${indent}${last ? "   " : "│  "}`;
    children.forEach((child, index) =>
      walk(child, next, index === children.length - 1, false)
    );
  };
  walk(span, indent, true, true);
}

/** A span attribute's value, whatever its OTLP type. */
function attribute(span: Span, key: string): unknown {
  const value = span.attributes.find((attribute) => attribute.key === key)
    ?.value;
  return value === undefined ? undefined : Object.values(value)[0];
}

// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// An OTLP/HTTP JSON receiver for the tests of the OpenTelemetry support: a
// program started with `receiver.env` exports its spans and metrics here,
// and a test awaits the ones it expects, flattened into plain records.

/** An OTLP attribute value, decoded. */
export type OtlpValue =
  | string
  | number
  | boolean
  | null
  | OtlpValue[]
  | { [key: string]: OtlpValue };

/** OTLP attributes, decoded into a plain object. */
export type OtlpAttributes = Record<string, OtlpValue>;

/** The kind of a span, as named by the OpenTelemetry API. */
export type OtlpSpanKind =
  | "unspecified"
  | "internal"
  | "server"
  | "client"
  | "producer"
  | "consumer";

/** One exported span. */
export interface OtlpSpan {
  traceId: string;
  spanId: string;
  /** `undefined` for a root span. */
  parentSpanId: string | undefined;
  name: string;
  kind: OtlpSpanKind;
  attributes: OtlpAttributes;
  /** `code`: 0 unset, 1 ok, 2 error. */
  status: { code: number; message: string };
  events: { name: string; attributes: OtlpAttributes }[];
  links: { traceId: string; spanId: string; attributes: OtlpAttributes }[];
  /** Nanoseconds since the epoch, as a bigint (they overflow a number's precision). */
  startTimeUnixNano: bigint;
  endTimeUnixNano: bigint;
  resource: OtlpAttributes;
  /** The name of the tracer that made it ("deno" for the runtime's own). */
  scope: string;
}

/** One exported metric data point. */
export interface OtlpDataPoint {
  name: string;
  unit: string;
  kind: "histogram" | "sum" | "gauge" | "exponentialHistogram" | "summary";
  attributes: OtlpAttributes;
  /** A sum's or a gauge's value. */
  value?: number;
  /** A histogram's count of recordings. */
  count?: number;
  /** A histogram's sum of recordings. */
  sum?: number;
  /** Whether a sum only grows. */
  monotonic?: boolean;
  resource: OtlpAttributes;
  /** The name of the meter that made it ("deno" for the runtime's own). */
  scope: string;
}

/** A running receiver. */
export interface OtlpReceiver extends AsyncDisposable {
  /** The base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` takes it. */
  readonly url: string;
  /**
   * The environment of a program that exports here, promptly: spans within
   * about 20 ms of their end, metrics every 100 ms.
   */
  readonly env: Record<string, string>;
  /** Every span received so far, in arrival order. */
  readonly spans: readonly OtlpSpan[];
  /** Every metric data point received so far, in arrival order (each export repeats the cumulative points). */
  readonly metrics: readonly OtlpDataPoint[];
  /**
   * Resolves with all spans received once `predicate` holds for them; checked
   * now and on each export that arrives. Rejects after `timeout` ms with what
   * was received.
   */
  waitForSpans(
    predicate: (spans: readonly OtlpSpan[]) => boolean,
    timeout?: number,
  ): Promise<OtlpSpan[]>;
  /** As {@linkcode OtlpReceiver.waitForSpans}, for metric data points. */
  waitForMetrics(
    predicate: (points: readonly OtlpDataPoint[]) => boolean,
    timeout?: number,
  ): Promise<OtlpDataPoint[]>;
  /** Stops serving; pending waits reject. */
  close(): Promise<void>;
}

interface Waiter {
  check(): void;
  fail(reason: string): void;
}

const spanKinds: OtlpSpanKind[] = [
  "unspecified",
  "internal",
  "server",
  "client",
  "producer",
  "consumer",
];

const statusCodes: Record<string, number> = {
  STATUS_CODE_UNSET: 0,
  STATUS_CODE_OK: 1,
  STATUS_CODE_ERROR: 2,
};

// deno-lint-ignore no-explicit-any
type Json = any;

/** Decodes an OTLP `AnyValue`. */
export function decodeValue(value: Json): OtlpValue {
  if (value === undefined || value === null) return null;
  if ("stringValue" in value) return value.stringValue;
  if ("boolValue" in value) return value.boolValue;
  // int64 travels as a decimal string in OTLP JSON.
  if ("intValue" in value) return Number(value.intValue);
  if ("doubleValue" in value) return Number(value.doubleValue);
  if ("arrayValue" in value) {
    return (value.arrayValue.values ?? []).map(decodeValue);
  }
  if ("kvlistValue" in value) {
    return decodeAttributes(value.kvlistValue.values);
  }
  if ("bytesValue" in value) return value.bytesValue;
  return null;
}

/** Decodes a list of OTLP `KeyValue`s into a plain object. */
export function decodeAttributes(list: Json): OtlpAttributes {
  const attributes: OtlpAttributes = {};
  for (const { key, value } of list ?? []) {
    attributes[key] = decodeValue(value);
  }
  return attributes;
}

function decodeKind(kind: Json): OtlpSpanKind {
  if (typeof kind === "number") return spanKinds[kind] ?? "unspecified";
  if (typeof kind === "string") {
    const name = kind.replace(/^SPAN_KIND_/, "").toLowerCase();
    if ((spanKinds as string[]).includes(name)) return name as OtlpSpanKind;
  }
  return "unspecified";
}

function decodeStatus(status: Json): { code: number; message: string } {
  const code = status?.code;
  return {
    code: typeof code === "string" ? statusCodes[code] ?? 0 : code ?? 0,
    message: status?.message ?? "",
  };
}

/** Flattens an `ExportTraceServiceRequest`. */
export function flattenTraces(body: Json): OtlpSpan[] {
  const spans: OtlpSpan[] = [];
  for (const resourceSpans of body.resourceSpans ?? []) {
    const resource = decodeAttributes(resourceSpans.resource?.attributes);
    for (const scopeSpans of resourceSpans.scopeSpans ?? []) {
      const scope = scopeSpans.scope?.name ?? "";
      for (const span of scopeSpans.spans ?? []) {
        spans.push({
          traceId: span.traceId,
          spanId: span.spanId,
          parentSpanId: span.parentSpanId || undefined,
          name: span.name,
          kind: decodeKind(span.kind),
          attributes: decodeAttributes(span.attributes),
          status: decodeStatus(span.status),
          events: (span.events ?? []).map((event: Json) => ({
            name: event.name,
            attributes: decodeAttributes(event.attributes),
          })),
          links: (span.links ?? []).map((link: Json) => ({
            traceId: link.traceId,
            spanId: link.spanId,
            attributes: decodeAttributes(link.attributes),
          })),
          startTimeUnixNano: BigInt(span.startTimeUnixNano ?? 0),
          endTimeUnixNano: BigInt(span.endTimeUnixNano ?? 0),
          resource,
          scope,
        });
      }
    }
  }
  return spans;
}

function numberOf(point: Json): number | undefined {
  if ("asDouble" in point) return Number(point.asDouble);
  if ("asInt" in point) return Number(point.asInt);
  return undefined;
}

/** Flattens an `ExportMetricsServiceRequest` into its data points. */
export function flattenMetrics(body: Json): OtlpDataPoint[] {
  const points: OtlpDataPoint[] = [];
  for (const resourceMetrics of body.resourceMetrics ?? []) {
    const resource = decodeAttributes(resourceMetrics.resource?.attributes);
    for (const scopeMetrics of resourceMetrics.scopeMetrics ?? []) {
      const scope = scopeMetrics.scope?.name ?? "";
      for (const metric of scopeMetrics.metrics ?? []) {
        const kind = ([
          "histogram",
          "sum",
          "gauge",
          "exponentialHistogram",
          "summary",
        ] as const)
          .find((key) => key in metric);
        if (kind === undefined) continue;
        const data = metric[kind];
        for (const point of data.dataPoints ?? []) {
          const flat: OtlpDataPoint = {
            name: metric.name,
            unit: metric.unit ?? "",
            kind,
            attributes: decodeAttributes(point.attributes),
            resource,
            scope,
          };
          const value = numberOf(point);
          if (value !== undefined) flat.value = value;
          if ("count" in point) flat.count = Number(point.count);
          if ("sum" in point) flat.sum = Number(point.sum);
          if (kind === "sum") flat.monotonic = data.isMonotonic === true;
          points.push(flat);
        }
      }
    }
  }
  return points;
}

async function readJson(request: Request): Promise<Json> {
  const encoding = request.headers.get("content-encoding");
  if (encoding === "gzip" || encoding === "deflate") {
    const body = request.body!.pipeThrough(new DecompressionStream(encoding));
    return JSON.parse(await new Response(body).text());
  }
  return await request.json();
}

function describe(spans: readonly OtlpSpan[]): string {
  return spans.map((span) =>
    `${span.name} (${span.kind}) trace=${span.traceId} span=${span.spanId} parent=${
      span.parentSpanId ?? "-"
    } ${JSON.stringify(span.attributes)}`
  ).join("\n  ");
}

function describePoints(points: readonly OtlpDataPoint[]): string {
  return [
    ...new Set(
      points.map((point) =>
        `${point.name} (${point.kind}) ${JSON.stringify(point.attributes)}`
      ),
    ),
  ].join("\n  ");
}

/**
 * Starts a receiver on a free port of 127.0.0.1. It accepts OTLP/HTTP JSON
 * on `/v1/traces` and `/v1/metrics`, and `/v1/logs` (ignored).
 */
export function startOtlpReceiver(): OtlpReceiver {
  const spans: OtlpSpan[] = [];
  const metrics: OtlpDataPoint[] = [];
  const waiters = new Set<Waiter>();

  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen() {},
  }, async function receive(request) {
    const { pathname } = new URL(request.url);
    if (request.method !== "POST") {
      await request.body?.cancel();
      return new Response(null, { status: 405 });
    }
    if (pathname === "/v1/traces") {
      spans.push(...flattenTraces(await readJson(request)));
    } else if (pathname === "/v1/metrics") {
      metrics.push(...flattenMetrics(await readJson(request)));
    } else {
      await request.body?.cancel();
      if (pathname !== "/v1/logs") return new Response(null, { status: 404 });
    }
    for (const waiter of [...waiters]) waiter.check();
    return Response.json({});
  });
  const url = `http://127.0.0.1:${server.addr.port}`;

  function waitFor<T>(
    list: T[],
    predicate: (items: readonly T[]) => boolean,
    timeout: number,
    what: (items: readonly T[]) => string,
  ): Promise<T[]> {
    const { promise, resolve, reject } = Promise.withResolvers<T[]>();
    let timer: ReturnType<typeof setTimeout> | undefined = undefined;
    const waiter: Waiter = {
      check() {
        let held: boolean;
        try {
          held = predicate(list);
        } catch (error) {
          settle();
          reject(error);
          return;
        }
        if (held) {
          settle();
          resolve([...list]);
        }
      },
      fail(reason) {
        settle();
        reject(new Error(`${reason}; received:\n  ${what(list)}`));
      },
    };
    function settle() {
      clearTimeout(timer);
      waiters.delete(waiter);
    }
    waiters.add(waiter);
    timer = setTimeout(
      () =>
        waiter.fail(
          `The awaited telemetry did not arrive within ${timeout} ms`,
        ),
      timeout,
    );
    waiter.check();
    return promise;
  }

  async function close(): Promise<void> {
    for (const waiter of [...waiters]) {
      waiter.fail("The receiver closed before the awaited telemetry arrived");
    }
    await server.shutdown();
  }

  return {
    url,
    env: {
      OTEL_DENO: "true",
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      OTEL_EXPORTER_OTLP_ENDPOINT: url,
      // Deno's span batch processor exports every 5 s by default.
      OTEL_BSP_SCHEDULE_DELAY: "20",
      // And its metric reader exports every 60 s by default.
      OTEL_METRIC_EXPORT_INTERVAL: "100",
    },
    spans,
    metrics,
    waitForSpans: (predicate, timeout = 10_000) =>
      waitFor(spans, predicate, timeout, describe),
    waitForMetrics: (predicate, timeout = 10_000) =>
      waitFor(metrics, predicate, timeout, describePoints),
    close,
    [Symbol.asyncDispose]: close,
  };
}

// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Traces and metrics through Deno's built-in OpenTelemetry, with no package:
// each attempt of a task is a span, child of the span that was active when
// its request added it (the request's server span), and its task's own
// `fetch` calls and spans nest under it. A chain that crosses a process
// carries its parent as a W3C `traceparent` string. The metrics are
// _metrics.ts's, on a meter made here. Deno types its telemetry as `any`:
// the few shapes used are declared here and there.
//
// Off unless Deno's telemetry is on (`OTEL_DENO=true`): then none of this
// runs on a request's path, which only compares a config field with
// undefined.

import { errorText } from "../util/_error_text.ts";
import { isInstance } from "../util/_promise.ts";
import type { TaskStats } from "../api/task_controls.ts";
import type { TaskInfo, TaskOutcome } from "../api/task_info.ts";
import { type AttributeValue, type Meter, Metrics } from "./_metrics.ts";

/** OpenTelemetry's context: immutable values by key. */
export interface OtelContext {
  getValue(key: symbol): unknown;
  setValue(key: symbol, value: unknown): OtelContext;
}

/** What identifies a span across processes. */
interface SpanContext {
  readonly traceId: string;
  readonly spanId: string;
  readonly traceFlags: number;
  readonly isRemote?: boolean;
}

/** The part of OpenTelemetry's span used here. */
interface Span {
  spanContext(): SpanContext;
  setAttributes(attributes: Record<string, AttributeValue>): unknown;
  setStatus(status: { code: number; message?: string }): unknown;
  recordException(exception: unknown): unknown;
  end(): void;
}

interface Tracer {
  startSpan(
    name: string,
    options: { kind: number; attributes: Record<string, AttributeValue> },
    context: OtelContext | undefined,
  ): Span;
}

interface ContextManager {
  active(): OtelContext;
  with<R>(context: OtelContext, fn: () => R): R;
}

/** Deno's telemetry, as typed here. */
interface DenoTelemetry {
  readonly tracerProvider: {
    getTracer(name: string, version?: string): Tracer;
  };
  readonly contextManager: ContextManager;
  readonly meterProvider: { getMeter(name: string, version?: string): Meter };
}

/** The key under which OpenTelemetry's context holds the active span. */
const SPAN_KEY = Symbol.for("OpenTelemetry Context Key SPAN");

/** Where OpenTelemetry's JavaScript API looks for its global providers. */
const API_KEY = Symbol.for("opentelemetry.js.api.1");

/** Span kinds, as OpenTelemetry's JavaScript API numbers them. */
const INTERNAL = 0;
const CONSUMER = 4;

/** OpenTelemetry's error status code. */
const ERROR = 2;

const SCOPE = "@afterward/background-tasks";
const VERSION = "0.1.0";

/** A W3C `traceparent`, version 00. */
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/**
 * The span context a `traceparent` names, if it is valid: of the form
 * above, with neither id all zeros, as W3C requires (Deno's `startSpan()`
 * throws on such a parent, and the task would have no span).
 */
function parseTraceparent(
  traceparent: string,
): SpanContext | undefined {
  const match = TRACEPARENT.exec(traceparent);
  if (match === null) return undefined;
  const traceId = match[1]!;
  const spanId = match[2]!;
  if (/^0+$/.test(traceId) || /^0+$/.test(spanId)) return undefined;
  return {
    traceId,
    spanId,
    traceFlags: parseInt(match[3]!, 16),
    isRemote: true,
  };
}

/**
 * The messaging attributes of an attempt that a worker took from a queue:
 * its span is then a consumer span that carries them. An attempt without
 * them runs in this process, in an internal span.
 */
export interface MessagingAttributes {
  /** The queue's system: `messaging.system`. */
  readonly system: string;
  /** The queue's name: `messaging.destination.name`. */
  readonly destination: string;
  /** The message's id: `messaging.message.id`. */
  readonly messageId: string;
}

/** An attempt's span, between its start and its end. */
export interface AttemptSpan {
  /** Runs `fn` with the span active, so that what it starts nests under it. */
  run<R>(fn: () => R): R;
  /**
   * Ends the span with the attempt's outcome, and measures the attempt; only
   * the first call counts (an attempt given up on ends at once, its task
   * perhaps later).
   */
  end(outcome: TaskOutcome, value: unknown, willRetry: boolean): void;
}

/**
 * Deno's telemetry, when it is on: made once per process, since Deno reads
 * `OTEL_DENO` at startup.
 */
export class Telemetry {
  readonly #tracer: Tracer;
  readonly #contexts: ContextManager;
  readonly #metrics: Metrics;

  constructor(deno: DenoTelemetry) {
    this.#tracer = deno.tracerProvider.getTracer(SCOPE, VERSION);
    this.#contexts = deno.contextManager;
    this.#metrics = new Metrics(deno.meterProvider.getMeter(SCOPE, VERSION));
  }
  /** The context active now: in a handler, the request's. */
  active(): OtelContext {
    return this.#contexts.active();
  }

  /** Counts a runner's tasks in the gauges, for as long as it lives. */
  watch(runner: { readonly stats: TaskStats }): void {
    this.#metrics.watch(runner);
  }

  /**
   * Starts the span of an attempt, child of `parent` (the context captured
   * when its request added the task, or made from a `traceparent`). Its
   * attributes name the task, never its arguments or its request's URL.
   */
  start(
    info: TaskInfo,
    options: {
      /** The task's stable id, `""` for a task without one. */
      readonly id: string;
      readonly parent?: OtelContext | undefined;
      readonly messaging?: MessagingAttributes | undefined;
    },
  ): AttemptSpan | undefined {
    // Telemetry must never cost a task its run: if it fails, the attempt
    // goes on without a span.
    try {
      return this.#start(info, options);
    } catch {
      return undefined;
    }
  }

  #start(
    info: TaskInfo,
    { id, parent, messaging }: {
      readonly id: string;
      readonly parent?: OtelContext | undefined;
      readonly messaging?: MessagingAttributes | undefined;
    },
  ): AttemptSpan {
    const attributes: Record<string, AttributeValue> = {
      "background_task.name": info.name,
      "background_task.index": info.index,
      "background_task.attempt": info.attempt,
    };
    if (id !== "") attributes["background_task.id"] = id;
    if (info.delivered !== undefined) {
      attributes["background_task.response_delivered"] = info.delivered;
    }
    if (messaging !== undefined) {
      attributes["messaging.system"] = messaging.system;
      attributes["messaging.operation.name"] = "process";
      attributes["messaging.operation.type"] = "process";
      attributes["messaging.destination.name"] = messaging.destination;
      attributes["messaging.message.id"] = messaging.messageId;
    }
    const span = this.#tracer.startSpan(
      `task ${info.name}`,
      { kind: messaging === undefined ? INTERNAL : CONSUMER, attributes },
      parent,
    );
    const startedAt = performance.now();
    const active = (parent ?? this.#contexts.active()).setValue(SPAN_KEY, span);
    let ended = false;
    return {
      run: (fn) => this.#contexts.with(active, fn),
      end: (outcome, value, willRetry) => {
        if (ended) return;
        ended = true;
        try {
          // Each attribute is a call into Deno: `will_retry` is said only
          // of an attempt that did not succeed.
          const ended: Record<string, AttributeValue> = {
            "background_task.outcome": outcome,
          };
          const measured: Record<string, AttributeValue> = {
            "background_task.name": info.name,
            "background_task.outcome": outcome,
          };
          if (outcome !== "succeeded") {
            ended["background_task.will_retry"] = willRetry;
            const name = errorName(value);
            const type = errorType(outcome, name);
            ended["error.type"] = measured["error.type"] = type;
            const message = errorText(value, "message");
            // The error as the default reporter writes it, read once and
            // without throwing: its message and stack, which hold no
            // argument of the task.
            span.recordException({
              name: name ?? type,
              message,
              stack: errorText(value),
            });
            span.setStatus({ code: ERROR, message });
          }
          span.setAttributes(ended);
          this.#metrics.attempted(
            (performance.now() - startedAt) / 1000,
            measured,
          );
        } catch {
          // Telemetry failing changes nothing for the task.
        } finally {
          try {
            span.end();
          } catch {
            // As above.
          }
        }
      },
    };
  }

  /**
   * The `traceparent` of the span active in `context`, to carry with a
   * chain to another process; `undefined` when it has none.
   */
  traceparent(context: OtelContext | undefined): string | undefined {
    // The span may be anyone's: if it cannot say, the chain goes without.
    try {
      const span = context?.getValue(SPAN_KEY) as Partial<Span> | undefined;
      if (typeof span?.spanContext !== "function") return undefined;
      const { traceId, spanId, traceFlags } = span.spanContext();
      const flags = (traceFlags & 0xff).toString(16).padStart(2, "0");
      const traceparent = `00-${traceId}-${spanId}-${flags}`;
      return parseTraceparent(traceparent) === undefined
        ? undefined
        : traceparent;
    } catch {
      return undefined;
    }
  }

  /**
   * The context whose parent is the remote span a `traceparent` names, or
   * `undefined` for a missing or malformed one.
   */
  remote(traceparent: unknown): OtelContext | undefined {
    if (typeof traceparent !== "string") return undefined;
    const spanContext = parseTraceparent(traceparent);
    if (spanContext === undefined) return undefined;
    return this.#contexts.active().setValue(SPAN_KEY, {
      spanContext: () => spanContext,
      isRecording: () => false,
    });
  }
}

/** The name of a thrown `Error`, if it can be read; else `undefined`. */
function errorName(value: unknown): string | undefined {
  if (!isInstance(value, Error)) return undefined;
  try {
    const { name } = value;
    return typeof name === "string" && name !== "" ? name : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The `error.type` of an attempt that did not succeed: `timeout`,
 * `abandoned`, the error's name, or `_OTHER` as OpenTelemetry's conventions
 * say for a value without one.
 */
function errorType(outcome: TaskOutcome, name: string | undefined): string {
  if (outcome === "timedOut") return "timeout";
  if (outcome === "abandoned") return "abandoned";
  return name ?? "_OTHER";
}

let telemetry: Telemetry | null | undefined;

/**
 * Deno's telemetry when it is on (`OTEL_DENO=true`), else `undefined`.
 * Asked once: the answer cannot change while the process runs. On is told
 * by Deno having registered its providers as OpenTelemetry's global ones,
 * which asks no permission and never throws.
 */
export function denoTelemetry(): Telemetry | undefined {
  if (telemetry === undefined) {
    const deno = onTelemetry();
    telemetry = deno === undefined ? null : new Telemetry(deno);
  }
  return telemetry ?? undefined;
}

/**
 * Whether Deno's telemetry is on, whatever the `telemetry` options say:
 * then `Deno.exit()` exports what is left before the process ends.
 */
export function denoTelemetryOn(): boolean {
  return onTelemetry() !== undefined;
}

function onTelemetry(): DenoTelemetry | undefined {
  try {
    const deno = (globalThis as { Deno?: { telemetry?: DenoTelemetry } })
      .Deno?.telemetry;
    const api = (globalThis as Record<symbol, { trace?: unknown }>)[API_KEY];
    if (deno !== undefined && api?.trace === deno.tracerProvider) return deno;
  } catch {
    // Not Deno's, or not on: no telemetry.
  }
  return undefined;
}

// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Whether Redis can be reached, said once per change. While Redis is down,
// ioredis reports an error on every attempt to reconnect (several a second):
// the BullMQ backend and workers say one line when it is lost and one when
// it is back, and a web process shows the state in `stats.backend`.

import { errorText } from "../util/_error_text.ts";
import type { BackendStatus } from "../api/task_backend.ts";

/** The state of a set of connections: down while any of them is. */
export class ConnectionWatch {
  #status: BackendStatus = { state: "up", since: new Date() };
  readonly #down = new Set<unknown>();
  readonly #onChange: (status: BackendStatus, previous: BackendStatus) => void;

  /** `onChange` is told each change; what it throws is written, not thrown. */
  constructor(
    onChange: (status: BackendStatus, previous: BackendStatus) => void,
  ) {
    this.#onChange = onChange;
  }

  get status(): BackendStatus {
    return this.#status;
  }

  /** `part` (a connection, a stalled store) failed, with `error`. */
  down(part: unknown, error: unknown): void {
    this.#down.add(part);
    if (this.#status.state === "down") return;
    this.#change({
      state: "down",
      since: new Date(),
      error: connectionErrorText(error),
    });
  }

  /** `part` works again; the state is up once every part does. */
  up(part: unknown): void {
    this.#down.delete(part);
    if (this.#status.state === "up" || this.#down.size > 0) return;
    this.#change({ state: "up", since: new Date() });
  }

  #change(status: BackendStatus): void {
    const previous = this.#status;
    this.#status = status;
    try {
      this.#onChange(status, previous);
    } catch (error) {
      try {
        console.error("A Redis status hook threw:", error);
      } catch {
        // Nobody is left to tell.
      }
    }
  }
}

/** Error codes that mean Redis could not be reached, not that it refused. */
const CONNECTION_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "ENOTFOUND",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
]);

/** Whether `error` says the connection failed (rather than a command). */
export function isConnectionError(error: unknown): boolean {
  if (typeof error !== "object" || error === null) return false;
  const { code, message, errors } = error as {
    code?: unknown;
    message?: unknown;
    errors?: unknown;
  };
  if (typeof code === "string" && CONNECTION_CODES.has(code)) return true;
  if (Array.isArray(errors) && errors.some(isConnectionError)) return true;
  return typeof message === "string" &&
    /Connection is closed|connect ETIMEDOUT|Failed to refresh slots cache|None of startup nodes is available/
      .test(message);
}

/**
 * The codes with which Redis refuses a command while connected: a replica
 * (read-only, as during a failover), memory full (`maxmemory`), a failed
 * save (`MISCONF`), a dataset still loading, a script that runs too long,
 * a Cluster without a master for a slot.
 */
const REFUSALS =
  /^(?:READONLY|OOM|MISCONF|NOREPLICAS|MASTERDOWN|LOADING|BUSY|CLUSTERDOWN|TRYAGAIN)\b/;

/**
 * Whether `error` is Redis refusing a command while connected (see
 * REFUSALS), rather than a lost connection or a command's own fault; or,
 * given a status's error text, whether that text says so.
 */
export function isRefusal(error: unknown): boolean {
  return REFUSALS.test(connectionErrorText(error));
}

/**
 * A connection error in one line: its message, or, for an `AggregateError`
 * of every address tried (which has none), the first one's; for a
 * transaction Redis discarded (EXECABORT), the first command's refusal
 * (such as `OOM command not allowed…`), which ioredis keeps beside it.
 */
export function connectionErrorText(error: unknown): string {
  const { errors, previousErrors } = (error ?? {}) as {
    errors?: unknown;
    previousErrors?: unknown;
  };
  if (Array.isArray(previousErrors) && previousErrors.length > 0) {
    return connectionErrorText(previousErrors[0]);
  }
  const text = errorText(error, "message");
  if (
    Array.isArray(errors) && errors.length > 0 && /^AggregateError/.test(text)
  ) {
    return connectionErrorText(errors[0]);
  }
  return text;
}

/** How long ago `since` was, for a line: "4.2 s". */
export function elapsed(since: Date): string {
  return `${((Date.now() - since.getTime()) / 1000).toFixed(1)} s`;
}

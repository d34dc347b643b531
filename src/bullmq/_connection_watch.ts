// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Whether the datastore (Redis or PostgreSQL) can be reached, said once per
// change. While Redis is down, ioredis reports an error on every attempt to
// reconnect (several a second), and node-postgres one per query: the BullMQ
// backend and workers say one line when it is lost and one when it is back,
// and a web process shows the state in `stats.backend`.

import { errorText } from "../util/_error_text.ts";
import type { BackendStatus } from "../api/task_backend.ts";

/** The state of a set of connections: down while any of them is. */
export class ConnectionWatch {
  #status: BackendStatus = { state: "up", since: new Date() };
  readonly #down = new Set<unknown>();
  readonly #onChange: (status: BackendStatus, previous: BackendStatus) => void;
  readonly #secret: string | undefined;

  /**
   * `onChange` is told each change; what it throws is written, not thrown.
   * `secret` (a password) is hidden wherever an error's text holds it.
   */
  constructor(
    onChange: (status: BackendStatus, previous: BackendStatus) => void,
    secret?: string,
  ) {
    this.#onChange = onChange;
    this.#secret = secret === "" ? undefined : secret;
  }

  get status(): BackendStatus {
    return this.#status;
  }

  /** `part` (a connection, a stalled store) failed, with `error`. */
  down(part: unknown, error: unknown): void {
    this.#down.add(part);
    if (this.#status.state === "down") return;
    const text = connectionErrorText(error);
    this.#change({
      state: "down",
      since: new Date(),
      error: this.#secret === undefined
        ? text
        : text.replaceAll(this.#secret, "***"),
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
        console.error("A BullMQ status hook threw:", error);
      } catch {
        // Nobody is left to tell.
      }
    }
  }
}

/**
 * Error codes that mean the datastore could not be reached, not that it
 * refused: the socket's, and PostgreSQL's for a connection it ends or does
 * not take yet (class 08, and 57P01 to 57P03: an administrator's shutdown,
 * a crash, a server starting or stopping).
 */
const CONNECTION_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "ENOTFOUND",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
  "08000",
  "08001",
  "08003",
  "08004",
  "08006",
  "57P01",
  "57P02",
  "57P03",
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
  // ioredis's words, then node-postgres's for a connection lost, or not
  // made within its pool's connectionTimeoutMillis.
  return typeof message === "string" &&
    /Connection is closed|connect ETIMEDOUT|Failed to refresh slots cache|None of startup nodes is available|Connection terminated|timeout exceeded when trying to connect|is not queryable/
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
 * The SQLSTATE codes with which PostgreSQL refuses a write while connected:
 * a read-only transaction (a hot standby, as during a failover, or
 * `default_transaction_read_only`), a full disk, memory or other resources
 * exhausted.
 */
const POSTGRES_REFUSALS = new Set(["25006", "53000", "53100", "53200"]);

/** The same refusals, in a status's error text. */
const POSTGRES_REFUSAL_TEXTS =
  /in a read-only transaction|No space left on device|^out of memory/;

/**
 * Whether `error` is Redis or PostgreSQL refusing a command while connected
 * (see REFUSALS, POSTGRES_REFUSALS), rather than a lost connection or a
 * command's own fault; or, given a status's error text, whether that text
 * says so.
 */
export function isRefusal(error: unknown): boolean {
  const code = (error as { code?: unknown } | null | undefined)?.code;
  if (typeof code === "string" && POSTGRES_REFUSALS.has(code)) return true;
  const text = connectionErrorText(error);
  return REFUSALS.test(text) || POSTGRES_REFUSAL_TEXTS.test(text);
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

/**
 * Milliseconds before the `attempt`-th try (from 1) to reach the datastore
 * again, or to write to one that refused writes: the pace of BullMQ's
 * reconnections to Redis (1 s for the first seven tries, then growing to
 * 20 s).
 */
export function reconnectDelay(attempt: number): number {
  return Math.max(Math.min(Math.exp(attempt), 20_000), 1_000);
}

/** How long ago `since` was, for a line: "4.2 s". */
export function elapsed(since: Date): string {
  return `${((Date.now() - since.getTime()) / 1000).toFixed(1)} s`;
}

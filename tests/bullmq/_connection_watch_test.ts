// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Whether the datastore (Redis or PostgreSQL) can be reached, said once per
// change, and how its errors are told apart.

import assert from "node:assert/strict";
import { mock } from "node:test";
import {
  connectionErrorText,
  ConnectionWatch,
  isConnectionError,
  isRefusal,
} from "../../src/bullmq/_connection_watch.ts";
import type { BackendStatus } from "../../mod.ts";

function refused(port: number): Error {
  return Object.assign(new Error(`connect ECONNREFUSED 127.0.0.1:${port}`), {
    code: "ECONNREFUSED",
  });
}

Deno.test("ConnectionWatch tells a change once, however many errors come", () => {
  const told: BackendStatus["state"][] = [];
  const watch = new ConnectionWatch((status) => void told.push(status.state));
  const connection = {};
  for (let retry = 0; retry < 5; retry++) {
    watch.down(connection, refused(6379));
  }
  assert.equal(watch.status.state, "down");
  assert.equal(watch.status.error, "connect ECONNREFUSED 127.0.0.1:6379");
  watch.up(connection);
  watch.up(connection);
  assert.deepEqual(told, ["down", "up"]);
});

Deno.test("ConnectionWatch is up again only once every source is", () => {
  const told: string[] = [];
  const watch = new ConnectionWatch((status, previous) =>
    void told.push(`${previous.state} -> ${status.state}`)
  );
  const [a, b] = [{}, {}];
  watch.down(a, refused(1));
  watch.down(b, refused(2));
  watch.up(a);
  assert.equal(watch.status.state, "down");
  watch.up(b);
  assert.deepEqual(told, ["up -> down", "down -> up"]);
});

Deno.test("ConnectionWatch writes what its hook throws, and goes on", () => {
  const consoleError = mock.method(console, "error", () => {});
  try {
    const watch = new ConnectionWatch(() => {
      throw new Error("hook failed");
    });
    watch.down({}, refused(1));
    assert.equal(watch.status.state, "down");
    assert.equal(consoleError.mock.callCount(), 1);
    assert.equal(
      consoleError.mock.calls[0]?.arguments[0],
      "A BullMQ status hook threw:",
    );
  } finally {
    consoleError.mock.restore();
  }
});

Deno.test("isConnectionError() tells a lost connection from a refused command", () => {
  assert.equal(isConnectionError(refused(1)), true);
  assert.equal(isConnectionError(new Error("Connection is closed.")), true);
  assert.equal(
    isConnectionError(new AggregateError([refused(1), refused(2)], "")),
    true,
  );
  assert.equal(isConnectionError(new Error("ERR unknown command")), false);
  assert.equal(isConnectionError("ECONNREFUSED"), false);
  assert.equal(isConnectionError(null), false);
});

Deno.test("connectionErrorText() reads the first error of an AggregateError without a message", () => {
  assert.equal(
    connectionErrorText(new AggregateError([refused(6379), refused(6380)], "")),
    "connect ECONNREFUSED 127.0.0.1:6379",
  );
  assert.equal(
    connectionErrorText(refused(1)),
    "connect ECONNREFUSED 127.0.0.1:1",
  );
});

Deno.test("isRefusal() tells Redis refusing a command while connected from other errors, in an error or in a status's text", () => {
  for (
    const message of [
      "READONLY You can't write against a read only replica. script: 6c4c, on @user_script:215.",
      "OOM command not allowed when used memory > 'maxmemory'.",
      "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.",
      "LOADING Redis is loading the dataset in memory",
    ]
  ) {
    assert.equal(isRefusal(new Error(message)), true, message);
    assert.equal(isRefusal(message), true, message);
  }
  // A transaction Redis discarded for its first command's refusal.
  assert.equal(
    isRefusal(
      Object.assign(new Error("EXECABORT Transaction discarded"), {
        previousErrors: [new Error("OOM command not allowed")],
      }),
    ),
    true,
  );
  assert.equal(isRefusal(refused(1)), false);
  assert.equal(isRefusal(new Error("ERR unknown command")), false);
  assert.equal(
    isRefusal(new Error("Missing key for job 1. moveToFinished")),
    false,
  );
  assert.equal(isRefusal(undefined), false);
});

Deno.test("isConnectionError() and isRefusal() know PostgreSQL's words and codes", () => {
  const postgres = (message: string, code?: string) =>
    Object.assign(new Error(message), code === undefined ? {} : { code });
  for (
    const error of [
      postgres("Connection terminated unexpectedly"),
      postgres("Connection terminated due to connection timeout"),
      postgres("timeout exceeded when trying to connect"),
      postgres(
        "Client has encountered a connection error and is not queryable",
      ),
      postgres("terminating connection due to administrator command", "57P01"),
      postgres("the database system is starting up", "57P03"),
      postgres("connection failure", "08006"),
    ]
  ) {
    assert.equal(isConnectionError(error), true, error.message);
    assert.equal(isRefusal(error), false, error.message);
  }
  for (
    const [message, code] of [
      ["cannot execute INSERT in a read-only transaction", "25006"],
      [
        'could not extend file "base/5/16384": No space left on device',
        "53100",
      ],
      ["out of memory", "53200"],
    ] as const
  ) {
    const error = postgres(message, code);
    assert.equal(isRefusal(error), true, message);
    // A status keeps the text alone.
    assert.equal(isRefusal(message), true, message);
    assert.equal(isConnectionError(error), false, message);
  }
  assert.equal(
    isRefusal(postgres('relation "job" does not exist', "42P01")),
    false,
  );
  assert.equal(
    isConnectionError(postgres('relation "job" does not exist', "42P01")),
    false,
  );
});

Deno.test("ConnectionWatch hides its secret in a status's error", () => {
  const watch = new ConnectionWatch(() => {}, "s3cret/+");
  watch.down({}, new Error("could not use s3cret/+ to connect, s3cret/+"));
  assert.equal(watch.status.error, "could not use *** to connect, ***");
});

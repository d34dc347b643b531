// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// What the BullMQ backend and its workers share: the connection as BullMQ
// takes it (Redis's, or PostgreSQL's), and where each shard's keys live on a
// Cluster.

import assert from "node:assert/strict";
import pg from "npm:pg@^8";
import { Redis } from "npm:ioredis@^5";
import { parseConnection } from "../../src/bullmq/_datastore.ts";
import {
  assertPrefix,
  connectionOptions,
  keySlot,
  shardPrefixes,
} from "../../src/bullmq/_shared.ts";

const action = "Cannot create BullMQ backend";

Deno.test("connectionOptions() hands a Redis URL to BullMQ, and ioredis options as they are", () => {
  for (
    const url of [
      "redis://127.0.0.1:6379",
      "rediss://default:secret@redis.example.com:6380/2",
      "redis://:p%40ss@localhost/0",
    ]
  ) {
    assert.deepEqual(connectionOptions(url, action), { url });
  }
  const options = { host: "redis.internal", port: 6380, tls: { ca: "PEM" } };
  assert.equal(connectionOptions(options, action), options);
  const sentinel = { sentinels: [{ host: "a", port: 26379 }], name: "main" };
  assert.equal(connectionOptions(sentinel, action), sentinel);
});

Deno.test("connectionOptions() refuses what is not a Redis URL, options or instance, hiding a password", () => {
  const refused: [unknown, string][] = [
    [
      "http://user:secret@example.com",
      `${action} as 'connection' must be a redis://, rediss://, postgres:// or postgresql:// URL: current value is "http://***@example.com"`,
    ],
    [
      "localhost:6379",
      `${action} as 'connection' must be a redis://, rediss://, postgres:// or postgresql:// URL: current value is "localhost:6379"`,
    ],
    [
      "not a url",
      `${action} as 'connection' must be a redis://, rediss://, postgres:// or postgresql:// URL: current value is "not a url"`,
    ],
    [
      6379,
      `${action} as 'connection' must be a Redis or PostgreSQL URL, ioredis options, an ioredis instance or a pg.Pool: current value is 6379`,
    ],
    [
      null,
      `${action} as 'connection' must be a Redis or PostgreSQL URL, ioredis options, an ioredis instance or a pg.Pool: current value is null`,
    ],
    [
      ["redis://127.0.0.1"],
      `${action} as 'connection' must be a Redis or PostgreSQL URL, ioredis options, an ioredis instance or a pg.Pool: current value is an array`,
    ],
  ];
  for (const [connection, message] of refused) {
    assert.throws(() => connectionOptions(connection, action), {
      name: "TypeError",
      message,
    });
  }
});

Deno.test("connectionOptions() hides a password with a slash, or without a scheme, in its message", () => {
  // Cloud access keys are base64: a "/" ends the URL's authority early,
  // and a URL without its scheme parses as one named after the user.
  for (
    const [connection, shown] of [
      [
        "rediss://:k3y/with+slash=@redis.example.com:6380",
        "rediss://***@redis.example.com:6380",
      ],
      ["default:s3cret@redis.example.com:6379", "***@redis.example.com:6379"],
      ["redis://user:a@b@[::1", "redis://***@[::1"],
    ]
  ) {
    assert.throws(() => connectionOptions(connection, action), {
      name: "TypeError",
      message:
        `${action} as 'connection' must be a redis://, rediss://, postgres:// or postgresql:// URL: current value is "${shown}"`,
    });
  }
});

Deno.test("connectionOptions() and parseConnection() hide a password given as a query parameter in their messages", () => {
  // node-postgres and ioredis both take the URL's query parameters as
  // options: ?password= (or ioredis's ?sentinelPassword=) is a password.
  for (
    const [connection, shown, message] of [
      [
        "redis://redis.example.com:99999/0?password=hunter2",
        "redis://redis.example.com:99999/0?password=***",
        "must be a redis://, rediss://, postgres:// or postgresql:// URL",
      ],
      [
        "redis://:a@redis.example.com:99999?db=1&sentinelPassword=p@ss&x=1",
        "redis://***@redis.example.com:99999?db=1&sentinelPassword=***&x=1",
        "must be a redis://, rediss://, postgres:// or postgresql:// URL",
      ],
      [
        "postgres://app@db.example.com:99999/app?sslmode=require&password=hunter2",
        "postgres://***@db.example.com:99999/app?sslmode=require&password=***",
        "must be a valid postgres:// or postgresql:// URL",
      ],
      [
        "postgresql://db.example.com:1:2/app?user=app&PASSWORD=p@ss#x",
        "postgresql://db.example.com:1:2/app?user=app&PASSWORD=***#x",
        "must be a valid postgres:// or postgresql:// URL",
      ],
    ]
  ) {
    assert.throws(() => parseConnection(connection, action), {
      name: "TypeError",
      message:
        `${action} as 'connection' ${message}: current value is "${shown}"`,
    });
  }
});

Deno.test("parseConnection() refuses a URL object, whose fields ioredis would not see (it took one for options, and connected to 127.0.0.1:6379)", () => {
  for (
    const url of [
      "postgres://app:s3cret@db.example.com:5432/app",
      "redis://:s3cret@redis.example.com:6380",
    ]
  ) {
    assert.throws(() => parseConnection(new URL(url), action), {
      name: "TypeError",
      message:
        `${action} as 'connection' must be the URL as a string (its href), not a URL object: current value is a URL`,
    });
  }
});

Deno.test("connectionOptions() refuses for a worker an instance whose requests BullMQ could not block on", () => {
  const client = new Redis({ lazyConnect: true });
  const blocking = new Redis({ lazyConnect: true, maxRetriesPerRequest: null });
  try {
    assert.equal(connectionOptions(client, action), client);
    assert.throws(
      () => connectionOptions(client, "Cannot start BullMQ worker", true),
      {
        name: "TypeError",
        message:
          "Cannot start BullMQ worker as the ioredis instance in 'connection' must be made with maxRetriesPerRequest: null (for a Cluster, in its redisOptions), as BullMQ's workers need: current value is 20",
      },
    );
    assert.equal(
      connectionOptions(blocking, "Cannot start BullMQ worker", true),
      blocking,
    );
  } finally {
    client.disconnect();
    blocking.disconnect();
  }
});

Deno.test("keySlot() hashes as Redis Cluster does", () => {
  // CLUSTER KEYSLOT foo, and CRC-16/XMODEM's check value.
  assert.equal(keySlot("foo"), 12182);
  assert.equal(keySlot("123456789"), 0x31c3);
});

Deno.test("shardPrefixes() gives each shard a hash tag in its own equal range of slots", () => {
  for (const shards of [1, 2, 3, 7, 16]) {
    const prefixes = shardPrefixes("bull", shards);
    assert.equal(prefixes.length, shards);
    prefixes.forEach((prefix, shard) => {
      const tag = /^\{(bull:\d+:\d+)\}$/.exec(prefix)?.[1];
      assert.ok(tag, prefix);
      const slot = keySlot(tag);
      assert.ok(slot >= Math.floor(shard * 16384 / shards), prefix);
      assert.ok(slot < Math.floor((shard + 1) * 16384 / shards), prefix);
    });
    // Web processes and workers compute the same.
    assert.deepEqual(shardPrefixes("bull", shards), prefixes);
  }
});

Deno.test("assertPrefix() refuses a prefix that is empty or has braces", () => {
  assertPrefix("jobs", action);
  for (const [prefix, shown] of [["", '""'], ["{a}", '"{a}"'], [1, "1"]]) {
    assert.throws(() => assertPrefix(prefix, action), {
      name: "TypeError",
      message:
        `${action} as 'prefix' must be a non-empty string without braces: current value is ${shown}`,
    });
  }
});

Deno.test("parseConnection() tells PostgreSQL (a postgres:// or postgresql:// URL, a pg.Pool) from Redis, and reads the password to hide", () => {
  const action = "Cannot create BullMQ backend";
  assert.deepEqual(
    parseConnection("postgres://app:s%2Fcret@db:5432/app", action),
    {
      datastore: "PostgreSQL",
      target: "postgres://app:s%2Fcret@db:5432/app",
      password: "s/cret",
    },
  );
  assert.deepEqual(parseConnection("postgresql://db/app", action), {
    datastore: "PostgreSQL",
    target: "postgresql://db/app",
    password: undefined,
  });
  // node-postgres takes a password parameter over the URL's own.
  assert.deepEqual(
    parseConnection("postgres://app:old@db/app?password=s%2Fcret", action),
    {
      datastore: "PostgreSQL",
      target: "postgres://app:old@db/app?password=s%2Fcret",
      password: "s/cret",
    },
  );
  const pool = new pg.Pool();
  try {
    assert.deepEqual(parseConnection(pool, action), {
      datastore: "PostgreSQL",
      target: pool,
      password: undefined,
    });
  } finally {
    void pool.end();
  }
  assert.deepEqual(parseConnection("redis://:pw@localhost:6379/2", action), {
    datastore: "Redis",
    options: { url: "redis://:pw@localhost:6379/2" },
  });
  assert.deepEqual(parseConnection({ port: 6379 }, action), {
    datastore: "Redis",
    options: { port: 6379 },
  });
});

// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Redis for the BullMQ tests: the server .ci/run started (REDIS_PORT), else a
// private redis-server on a free port of 127.0.0.1, else none, and the tests
// are skipped, unless REQUIRE_REDIS=1 says they must run.

async function hasRedisServer(): Promise<boolean> {
  try {
    const { success } = await new Deno.Command("redis-server", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    }).output();
    return success;
  } catch {
    return false;
  }
}

/** The port of the Redis .ci/run started, if any (an empty value is none). */
const sharedPort = Deno.env.get("REDIS_PORT") || undefined;

/** Whether the tests can have a Redis. */
export const redisAvailable: boolean = sharedPort !== undefined ||
  await hasRedisServer();

if (!redisAvailable && Deno.env.get("REQUIRE_REDIS") === "1") {
  throw new Error("REQUIRE_REDIS=1 but there is no redis-server");
}

/** A Redis for one test, stopped when disposed if the test started it. */
export interface TestRedis extends AsyncDisposable {
  port: number;
}

async function ping(port: number): Promise<boolean> {
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      await conn.write(new TextEncoder().encode("PING\r\n"));
      const buffer = new Uint8Array(16);
      const read = await conn.read(buffer);
      return new TextDecoder().decode(buffer.subarray(0, read ?? 0)) ===
        "+PONG\r\n";
    } finally {
      conn.close();
    }
  } catch {
    return false;
  }
}

/** Connects to the shared Redis, or starts a private one. */
export async function startRedis(): Promise<TestRedis> {
  if (sharedPort !== undefined) {
    const port = Number(sharedPort);
    // A shared Redis that does not answer would leave BullMQ retrying forever.
    if (!(await ping(port))) {
      throw new Error(`No Redis answers on REDIS_PORT=${sharedPort}`);
    }
    return { port, [Symbol.asyncDispose]: async () => {} };
  }
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  const child = new Deno.Command("redis-server", {
    args: [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  for (let tries = 0; !(await ping(port)); tries++) {
    if (tries > 200) throw new Error("redis-server did not start");
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return {
    port,
    async [Symbol.asyncDispose]() {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

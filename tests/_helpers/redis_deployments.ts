// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// Redis as production runs it, for the BullMQ backend's tests: a server that
// speaks only TLS (with a certificate authority made by openssl for the
// test) and a Cluster of three masters, each started on free ports of
// 127.0.0.1 and stopped when disposed. They need redis-server, redis-cli
// and openssl, which .ci/run installs.

import { redisServerInstalled } from "./redis.ts";

/** Whether the tools these servers need are installed. */
export const deploymentsAvailable: boolean = redisServerInstalled &&
  await installed("redis-cli") && await installed("openssl");

if (!deploymentsAvailable) {
  if (Deno.env.get("REQUIRE_REDIS") === "1") {
    throw new Error(
      "REQUIRE_REDIS=1 but redis-server, redis-cli or openssl is missing",
    );
  }
  console.error(
    "Skipping the tests against a TLS Redis and a Redis Cluster (shown as ignored): they need redis-server, redis-cli and openssl on the PATH.",
  );
}

async function installed(command: string): Promise<boolean> {
  try {
    const { success } = await new Deno.Command(command, {
      args: [command === "openssl" ? "version" : "--version"],
      stdout: "null",
      stderr: "null",
    }).output();
    return success;
  } catch {
    return false;
  }
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

async function run(command: string, args: string[]): Promise<string> {
  const { success, stdout, stderr } = await new Deno.Command(command, { args })
    .output();
  const text = new TextDecoder().decode(stdout);
  if (!success) {
    throw new Error(
      `${command} ${args.join(" ")} failed: ${
        new TextDecoder().decode(stderr)
      }${text}`,
    );
  }
  return text;
}

/** Runs redis-cli against `port` until it answers `expected`, or gives up. */
async function until(
  args: string[],
  ok: (answer: string) => boolean,
  what: string,
): Promise<void> {
  for (let tries = 0;; tries++) {
    try {
      if (ok(await run("redis-cli", args))) return;
    } catch {
      // Not up yet.
    }
    if (tries > 400) throw new Error(`${what} did not happen`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** A redis-server listening only with TLS. */
export interface TlsRedis extends AsyncDisposable {
  readonly port: number;
  /** The PEM certificate of the authority that signed the server's. */
  readonly ca: string;
  /** Where `ca` is, for `deno run --cert`. */
  readonly caFile: string;
}

/**
 * Starts a redis-server that speaks only TLS, with a certificate for
 * 127.0.0.1 signed by a certificate authority made for the occasion.
 */
export async function startTlsRedis(): Promise<TlsRedis> {
  const dir = await Deno.makeTempDir();
  const file = (name: string) => `${dir}/${name}`;
  await run("openssl", [
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "1",
    "-subj",
    "/CN=afterward test CA",
    "-keyout",
    file("ca.key"),
    "-out",
    file("ca.crt"),
  ]);
  await run("openssl", [
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-subj",
    "/CN=127.0.0.1",
    "-keyout",
    file("redis.key"),
    "-out",
    file("redis.csr"),
  ]);
  await Deno.writeTextFile(file("ext.cnf"), "subjectAltName=IP:127.0.0.1\n");
  await run("openssl", [
    "x509",
    "-req",
    "-days",
    "1",
    "-in",
    file("redis.csr"),
    "-CA",
    file("ca.crt"),
    "-CAkey",
    file("ca.key"),
    "-CAcreateserial",
    "-extfile",
    file("ext.cnf"),
    "-out",
    file("redis.crt"),
  ]);
  const port = freePort();
  const child = new Deno.Command("redis-server", {
    args: [
      "--port",
      "0",
      "--tls-port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--tls-cert-file",
      file("redis.crt"),
      "--tls-key-file",
      file("redis.key"),
      "--tls-ca-cert-file",
      file("ca.crt"),
      "--tls-auth-clients",
      "no",
      "--save",
      "",
      "--appendonly",
      "no",
      "--dir",
      dir,
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const tls = ["--tls", "--cacert", file("ca.crt"), "-p", String(port)];
  await until(
    [...tls, "ping"],
    (answer) => answer.trim() === "PONG",
    "TLS Redis answering",
  );
  return {
    port,
    ca: await Deno.readTextFile(file("ca.crt")),
    caFile: file("ca.crt"),
    async [Symbol.asyncDispose]() {
      child.kill("SIGTERM");
      await child.status;
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** A Redis Cluster of masters on 127.0.0.1, without replicas. */
export interface RedisCluster extends AsyncDisposable {
  readonly ports: readonly number[];
  /** How many keys each node holds, by port. */
  keysPerNode(): Promise<Map<number, number>>;
}

/**
 * Starts `size` redis-servers with `--cluster-enabled yes` and makes them a
 * cluster with `redis-cli --cluster create`, each owning an equal range of
 * slots; resolves once the cluster says its state is ok.
 */
export async function startRedisCluster(size = 3): Promise<RedisCluster> {
  const dir = await Deno.makeTempDir();
  const ports = Array.from({ length: size }, freePort);
  const children = ports.map((port) =>
    new Deno.Command("redis-server", {
      args: [
        "--port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        `${dir}/nodes-${port}.conf`,
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        dir,
      ],
      stdout: "null",
      stderr: "null",
    }).spawn()
  );
  try {
    for (const port of ports) {
      await until(
        ["-p", String(port), "ping"],
        (answer) => answer.trim() === "PONG",
        `Redis on ${port} answering`,
      );
    }
    await run("redis-cli", [
      "--cluster",
      "create",
      ...ports.map((port) => `127.0.0.1:${port}`),
      "--cluster-replicas",
      "0",
      "--cluster-yes",
    ]);
    for (const port of ports) {
      await until(
        ["-p", String(port), "cluster", "info"],
        (answer) => answer.includes("cluster_state:ok"),
        `the cluster's state ok on ${port}`,
      );
    }
  } catch (error) {
    for (const child of children) child.kill("SIGKILL");
    await Promise.all(children.map((child) => child.status));
    await Deno.remove(dir, { recursive: true });
    throw error;
  }
  return {
    ports,
    async keysPerNode() {
      const counts = new Map<number, number>();
      for (const port of ports) {
        counts.set(
          port,
          Number(await run("redis-cli", ["-p", String(port), "dbsize"])),
        );
      }
      return counts;
    },
    async [Symbol.asyncDispose]() {
      for (const child of children) child.kill("SIGTERM");
      await Promise.all(children.map((child) => child.status));
      await Deno.remove(dir, { recursive: true });
    },
  };
}

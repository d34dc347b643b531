// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// The proxy's bookkeeping, against a server of the test's own that records
// the bytes each connection brings and answers when told: what it forwards
// must stay whole commands, whenever it is armed and whichever connection it
// cuts.

import assert from "node:assert/strict";
import { within } from "./common.ts";
import { startTcpProxy } from "./tcp_proxy.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A RESP command, as a client sends it. */
function command(...parts: string[]): string {
  return `*${parts.length}\r\n${
    parts.map((part) => `$${encoder.encode(part).length}\r\n${part}\r\n`)
      .join("")
  }`;
}

/** A connection the target accepted: what it received, and its socket. */
interface Accepted {
  conn: Deno.Conn;
  received: string;
  /** Resolves once what it received includes `text`. */
  has(text: string): Promise<void>;
}

/** A server that records what each connection sends it. */
function startTarget(): AsyncDisposable & {
  port: number;
  accepted: Promise<Accepted>[];
} {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const reading: Promise<void>[] = [];
  const next: PromiseWithResolvers<Accepted>[] = Array.from(
    { length: 4 },
    () => Promise.withResolvers<Accepted>(),
  );
  const accepting = (async () => {
    try {
      for await (const conn of listener) {
        conns.push(conn);
        let waiter: { text: string; resolve: () => void } | undefined;
        const accepted: Accepted = {
          conn,
          received: "",
          has(text) {
            const { promise, resolve } = Promise.withResolvers<void>();
            waiter = { text, resolve };
            if (accepted.received.includes(text)) resolve();
            return promise;
          },
        };
        next[conns.length - 1]!.resolve(accepted);
        reading.push((async () => {
          try {
            for await (const chunk of conn.readable) {
              accepted.received += decoder.decode(chunk);
              if (waiter && accepted.received.includes(waiter.text)) {
                waiter.resolve();
              }
            }
          } catch {
            // Closed by the proxy or at the end.
          }
        })());
      }
    } catch {
      // The listener was closed.
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    accepted: next.map(({ promise }) => promise),
    async [Symbol.asyncDispose]() {
      listener.close();
      await accepting;
      for (const conn of conns) {
        try {
          conn.close();
        } catch {
          // Already closed.
        }
      }
      await Promise.all(reading);
    },
  };
}

/** Connects to the proxy; closed with the returned disposable. */
async function connect(port: number): Promise<Deno.Conn & Disposable> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  return Object.assign(conn, {
    [Symbol.dispose]() {
      try {
        conn.close();
      } catch {
        // Closed by the proxy.
      }
    },
  });
}

Deno.test("startTcpProxy() armed in the middle of a command forwards the rest of it", async () => {
  await using target = startTarget();
  const arm = Promise.withResolvers<void>();
  await using proxy = startTcpProxy(target.port, { arm: arm.promise });
  using client = await connect(proxy.port);
  const set = command("SET", "key", "p".repeat(100));
  // A whole command and the start of the next: once PING is through, the
  // proxy has read that start.
  await client.write(encoder.encode(command("PING") + set.slice(0, 20)));
  const server = await target.accepted[0]!;
  await within(server.has(command("PING")), 5_000, "PING");
  arm.resolve();
  await arm.promise;
  const echo = command("ECHO", "after");
  await client.write(encoder.encode(set.slice(20) + echo));
  await within(
    server.has(echo),
    5_000,
    () => `the rest, received: ${JSON.stringify(server.received)}`,
  );
  assert.equal(server.received, command("PING") + set + echo);
  assert.equal(proxy.cuts, 0);
});

Deno.test("startTcpProxy() forwards a command a connection had begun when another's MULTI took the cut", async () => {
  await using target = startTarget();
  await using proxy = startTcpProxy(target.port);
  using first = await connect(proxy.port);
  await first.write(encoder.encode(command("PING")));
  const firstServer = await target.accepted[0]!;
  await within(firstServer.has(command("PING")), 5_000, "PING");
  using second = await connect(proxy.port);
  const set = command("SET", "key", "p".repeat(100));
  // A whole command and the start of the next: the proxy keeps that start.
  await second.write(encoder.encode(command("PING") + set.slice(0, 20)));
  const secondServer = await target.accepted[1]!;
  await within(secondServer.has(command("PING")), 5_000, "PING");
  await first.write(encoder.encode(command("MULTI")));
  await within(firstServer.has(command("MULTI")), 5_000, "MULTI");
  await second.write(encoder.encode(set.slice(20)));
  await within(
    secondServer.has(set.slice(20)),
    5_000,
    "the rest of SET",
  );
  assert.equal(secondServer.received, command("PING") + set);
});

Deno.test('startTcpProxy() with "store-reply" counts the answers of what was sent before it was armed', async () => {
  await using target = startTarget();
  const arm = Promise.withResolvers<void>();
  await using proxy = startTcpProxy(target.port, {
    cut: "store-reply",
    answers: 1,
    arm: arm.promise,
  });
  using client = await connect(proxy.port);
  await client.write(encoder.encode(command("PING")));
  const server = await target.accepted[0]!;
  await within(server.has(command("PING")), 5_000, "PING");
  arm.resolve();
  await arm.promise;
  // Answered once the proxy is armed: not an answer to the store.
  await server.conn.write(encoder.encode("+PONG\r\n"));
  const evalsha = command("EVALSHA", "abc", "0");
  await client.write(encoder.encode(evalsha));
  await within(server.has(evalsha), 5_000, "EVALSHA");
  // Its first answer goes through; the proxy cuts at the next.
  await server.conn.write(encoder.encode(":1\r\n:2\r\n"));
  await within(proxy.holding, 5_000, "the cut");
  // The client gets PONG and the store's first answer, then the cut.
  let received = "";
  const chunk = new Uint8Array(1024);
  while (true) {
    const read = await client.read(chunk);
    if (read === null) break;
    received += decoder.decode(chunk.subarray(0, read));
  }
  assert.equal(received, "+PONG\r\n:1\r\n");
  assert.equal(proxy.cuts, 1);
});

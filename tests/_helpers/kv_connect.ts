// Copyright 2026 the @afterward/background-tasks authors. MIT license.

// A Deno KV reached through KV Connect, the protocol of remote databases
// (Deno Deploy's among them), opened by Deno's own client against a server
// of the test's: it answers the metadata exchange and takes every plain
// write. Deno's client refuses an operation that enqueues before sending
// anything (denoland/denokv, remote/lib.rs, `atomic_write`: "Enqueue
// operations are not supported in KV Connect"), and its listenQueue() never
// settles, even once the database is closed (`dequeue_next_message`), so
// this database meets the backend exactly as a remote one does.

/** An AtomicWriteOutput (datapath.proto): status AW_SUCCESS, a versionstamp. */
const WRITTEN = new Uint8Array([
  0x08,
  0x01,
  0x12,
  0x0a,
  ...new Uint8Array(9),
  1,
]);

/** The error Deno's KV Connect client throws for an enqueue. */
export const KV_CONNECT_ENQUEUE_ERROR =
  "Enqueue operations are not supported in KV Connect";

/** A database through KV Connect, and its server, closed with the test. */
export async function openKvConnect(): Promise<
  Deno.Kv & AsyncDisposable & { readonly writes: number }
> {
  let writes = 0;
  const server: Deno.HttpServer<Deno.NetAddr> = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (request): Promise<Response> => {
      const { pathname } = new URL(request.url);
      await request.arrayBuffer();
      if (pathname === "/v1/atomic_write") {
        writes++;
        return new Response(WRITTEN);
      }
      if (pathname !== "/") return new Response(null, { status: 404 });
      return Response.json({
        version: 3,
        databaseId: crypto.randomUUID(),
        endpoints: [{
          url: `http://127.0.0.1:${server.addr.port}/v1`,
          consistency: "strong",
        }],
        token: "test",
        expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
      });
    },
  );
  // Deno's client sends it; the server above takes any.
  const previous = Deno.env.get("DENO_KV_ACCESS_TOKEN");
  Deno.env.set("DENO_KV_ACCESS_TOKEN", "test");
  let kv: Deno.Kv;
  try {
    kv = await Deno.openKv(`http://127.0.0.1:${server.addr.port}/`);
  } finally {
    if (previous === undefined) Deno.env.delete("DENO_KV_ACCESS_TOKEN");
    else Deno.env.set("DENO_KV_ACCESS_TOKEN", previous);
  }
  return Object.assign(kv, {
    get writes() {
      return writes;
    },
    async [Symbol.asyncDispose]() {
      kv.close();
      await server.shutdown();
    },
  });
}

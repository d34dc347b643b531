// Copyright 2026 the @afterward/background-tasks authors. MIT license.

/**
 * The seed's other use case: a posted file gets `202 Accepted` at once and is
 * processed in the background; `GET /files/{id}` tells how far it got.
 *
 * The body is read before the handler returns: once the response has been
 * sent, Deno closes the request, so the task receives the bytes, not the
 * `Request`.
 *
 * Run it and try it:
 *
 *   deno run --allow-net=127.0.0.1 --allow-env=PORT examples/accepted_processing.ts
 *   curl -i --data-binary @README.md http://127.0.0.1:8000/files
 *   curl http://127.0.0.1:8000/files/<id from the Location header>
 *
 * @module
 */

import { serve } from "../mod.ts";

/** What processing found out about a file. */
interface FileReport {
  bytes: number;
  lines: number;
  words: number;
  sha256: string;
}

const files = new Map<
  string,
  { status: "processing" | "done"; report?: FileReport }
>();

async function processFile(
  id: string,
  content: Uint8Array<ArrayBuffer>,
): Promise<void> {
  const text = new TextDecoder().decode(content);
  const digest = await crypto.subtle.digest("SHA-256", content);
  const report: FileReport = {
    bytes: content.byteLength,
    lines: text === "" ? 0 : text.split("\n").length,
    words: text.split(/\s+/).filter(Boolean).length,
    sha256: Array.from(
      new Uint8Array(digest),
      (byte) => byte.toString(16).padStart(2, "0"),
    ).join(""),
  };
  files.set(id, { status: "done", report });
  console.log(`processed ${id}: ${report.lines} lines, ${report.words} words`);
}

const upload = new URLPattern({ pathname: "/files" });
const status = new URLPattern({ pathname: "/files/:id" });

serve({
  hostname: "127.0.0.1",
  port: Number(Deno.env.get("PORT") ?? 8000),
  onListen({ hostname, port }) {
    console.log(`Listening on http://${hostname}:${port}/`);
    console.log(
      `Try it: curl -i --data-binary @README.md http://${hostname}:${port}/files`,
    );
  },
}, async (request, _info, tasks) => {
  if (request.method === "POST" && upload.test(request.url)) {
    const content = await request.bytes();
    const id = crypto.randomUUID();
    files.set(id, { status: "processing" });
    tasks.addTask(processFile, id, content);
    return Response.json({ id, status: "processing" }, {
      status: 202,
      headers: { location: `/files/${id}` },
    });
  }
  const match = request.method === "GET" ? status.exec(request.url) : null;
  const file = match && files.get(match.pathname.groups["id"]!);
  if (!file) return new Response("Not Found", { status: 404 });
  return Response.json({ id: match.pathname.groups["id"], ...file });
});

/**
 * Helpers for the api_*_test.ts files: one real server process per model per file, shared by that file's
 * tests, so the whole API surface is checked end to end in seconds; request and answer checks.
 */
import { assert, assertEquals } from "./assert.ts";
import { postJson } from "./helpers.ts";
import { ENGINE_LIB, HAVE_ENGINE, type ServerProcess, startRealServer } from "./real_server.ts";

if (!HAVE_ENGINE && Deno.env.get("CI")) {
  throw new Error(`${ENGINE_LIB} is missing: build it with cargo build --release before the tests`);
}

/**
 * Registers a group of tests sharing one server: the server starts before the first and stops after the
 * last, which Deno runs in file order. Without the engine library (and outside CI) they are ignored.
 */
export function sharedServer(modelDir: string, extra: string[] = []) {
  let server: Promise<ServerProcess> | null = null;
  let remaining = 0;
  const tests: { name: string; fn: (s: ServerProcess) => Promise<void> }[] = [];
  return {
    test(name: string, fn: (s: ServerProcess) => Promise<void>) {
      tests.push({ name, fn });
      remaining++;
      Deno.test({
        name,
        ignore: !HAVE_ENGINE,
        sanitizeResources: false,
        sanitizeOps: false,
        fn: async () => {
          server ??= startRealServer(modelDir, extra, { readyTimeoutMs: 120_000 });
          const s = await server;
          try {
            await fn(s);
          } finally {
            if (--remaining === 0) await s.stop();
          }
        },
      });
    },
  };
}

/** POST JSON and parse the JSON answer, asserting the status. */
export async function postOk(url: string, body: unknown, status = 200, headers = {}): Promise<any> {
  const res = await postJson(url, body, headers);
  const text = await res.text();
  assertEquals(res.status, status, text);
  return JSON.parse(text);
}

/** An SGLang error body: {object: "error", message, type, param, code}; returns it for more checks. */
export async function expectError(res: Response, status: number, messagePart: string): Promise<any> {
  const text = await res.text();
  assertEquals(res.status, status, text);
  const body = JSON.parse(text);
  assertEquals(body.object, "error", text);
  assertEquals(body.code, status, text);
  assert(typeof body.type === "string" && body.type.length > 0, text);
  assert(body.message.includes(messagePart), `${JSON.stringify(messagePart)} not in ${text}`);
  return body;
}

/** Parses an SSE body into its data payloads (JSON objects, or the string "[DONE]"). */
export async function sseEvents(res: Response): Promise<any[]> {
  const text = await res.text();
  assertEquals(res.status, 200, text);
  const events: any[] = [];
  for (const block of text.split("\n\n")) {
    if (block.trim() === "") continue;
    assert(block.startsWith("data: "), `not an SSE data block: ${JSON.stringify(block)}`);
    const payload = block.slice(6);
    events.push(payload === "[DONE]" ? "[DONE]" : JSON.parse(payload));
  }
  return events;
}

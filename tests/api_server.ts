/**
 * The real server process (main.ts on the real engine library) for the api_*_test.ts files: one per model
 * per file, shared by that file's tests, so the whole API surface is checked end to end in seconds.
 */
import { assert, assertEquals } from "./assert.ts";
import { postJson, REPO_ROOT } from "./helpers.ts";

export const ENGINE_LIB = Deno.env.get("LLM_ENGINE_LIB") || `${REPO_ROOT}/target/release/libllm_engine.so`;
export const HAVE_ENGINE = await Deno.stat(ENGINE_LIB).then(() => true, () => false);

if (!HAVE_ENGINE && Deno.env.get("CI")) {
  throw new Error(`${ENGINE_LIB} is missing: build it with cargo build --release before the tests`);
}

export interface RealServer {
  url: string;
  /** Everything the process printed so far. */
  log(): string;
  stop(): Promise<string>;
}

export async function startRealServer(modelDir: string, extra: string[] = []): Promise<RealServer> {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${REPO_ROOT}/main.ts`, "--model-path", modelDir, "--port", String(port), ...extra],
    env: { LLM_ENGINE_LIB: ENGINE_LIB },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // A filtered run (deno test --filter) may never reach a group's last test: never leave a server behind.
  globalThis.addEventListener("unload", () => {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  });
  let output = "";
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) output += chunk;
  };
  const readers = Promise.all([collect(child.stdout), collect(child.stderr)]);
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
    await child.status;
    await readers;
    return output;
  };
  const deadline = Date.now() + 120_000;
  while (!output.includes("The server is fired up and ready to roll!")) {
    const exited = await Promise.race([
      child.status.then(() => true),
      new Promise((r) => setTimeout(() => r(false), 100)),
    ]);
    if (exited || Date.now() > deadline) {
      throw new Error(`server did not start:\n${(await stop()).slice(-3000)}`);
    }
  }
  return { url: `http://127.0.0.1:${port}`, log: () => output, stop };
}

/**
 * Registers a group of tests sharing one server: the server starts before the first and stops after the
 * last, which Deno runs in file order. Without the engine library (and outside CI) they are ignored.
 */
export function sharedServer(modelDir: string, extra: string[] = []) {
  let server: Promise<RealServer> | null = null;
  let remaining = 0;
  const tests: { name: string; fn: (s: RealServer) => Promise<void> }[] = [];
  return {
    test(name: string, fn: (s: RealServer) => Promise<void>) {
      tests.push({ name, fn });
      remaining++;
      Deno.test({
        name,
        ignore: !HAVE_ENGINE,
        sanitizeResources: false,
        sanitizeOps: false,
        fn: async () => {
          server ??= startRealServer(modelDir, extra);
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

export async function golden(dir: string): Promise<any[]> {
  return JSON.parse(await Deno.readTextFile(`${dir}/golden.json`)).cases;
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

/**
 * Hostile and broken input against one live server (real engine, tiny-random Llama 3.1, float32): several hundred
 * generated cases (tests/hostile/cases.ts), each answered with its documented status and, for a 4xx, the SGLang
 * error body. Afterwards the server answers the golden request exactly and holds no request state or KV.
 * The server runs with --api-key, so every case also proves the key is accepted; the key checks come last.
 */
import { assert, assertEquals } from "./assert.ts";
import { TINY } from "./helpers.ts";
import { HostileCase, hostileCases } from "./hostile/cases.ts";
import { HAVE_ENGINE, type ServerProcess, startServer } from "./real_server.ts";

const CONTEXT = 1024;
const MAX_BODY = 8 << 20;
const KEY = "sk-hostile-test-key";
const AUTH = { authorization: `Bearer ${KEY}` };
const CONCURRENCY = 4;
/** A case that takes longer is a failure (a hang or a denial of service), not a slow pass. */
const CASE_TIMEOUT_MS = 15_000;

if (!HAVE_ENGINE && Deno.env.get("CI")) {
  Deno.test("hostile: the engine library must exist in CI", () => {
    throw new Error("build the engine with cargo build --release before the tests");
  });
}

interface Outcome {
  c: HostileCase;
  status: number;
  text: string;
  ms: number;
}

async function send(url: string, c: HostileCase): Promise<Outcome> {
  const t0 = performance.now();
  const res = await fetch(`${url}${c.path}`, {
    method: c.method,
    headers: { ...AUTH, ...c.headers },
    body: c.body as BodyInit | undefined,
    signal: AbortSignal.timeout(CASE_TIMEOUT_MS),
  });
  const text = c.method === "HEAD" ? "" : await res.text();
  return { c, status: res.status, text, ms: performance.now() - t0 };
}

/** What is wrong with an answer, or null. */
function judge(o: Outcome): string | null {
  if (!o.c.expect.includes(o.status)) {
    return `status ${o.status}, expected ${o.c.expect}: ${o.text.slice(0, 300)}`;
  }
  // /flush_cache answers its documented plain-text 400 while requests run (SGLang's wording).
  if (o.status >= 400 && o.c.method !== "HEAD" && !(o.c.path === "/flush_cache" && o.status === 400)) {
    let body: any;
    try {
      body = JSON.parse(o.text);
    } catch {
      return `a ${o.status} without a JSON error body: ${o.text.slice(0, 200)}`;
    }
    if (body.object !== "error" || typeof body.message !== "string" || body.message === "") {
      return `not the error body: ${o.text.slice(0, 200)}`;
    }
    if (typeof body.type !== "string" || !("param" in body)) {
      return `error body lacks type/param: ${o.text.slice(0, 200)}`;
    }
    if (body.code !== o.status && typeof body.code !== "string") {
      return `error code ${body.code} for status ${o.status}`;
    }
  }
  if (
    o.status === 200 && o.c.method === "POST" && o.c.path !== "/health" && o.c.path !== "/health_generate" &&
    o.c.path !== "/flush_cache" && o.c.path !== "/abort_request"
  ) {
    try {
      JSON.parse(o.text);
    } catch {
      return `200 without a JSON body: ${o.text.slice(0, 200)}`;
    }
  }
  return null;
}

async function runAll(url: string, cases: HostileCase[]): Promise<Outcome[]> {
  const out: Outcome[] = [];
  let next = 0;
  const worker = async () => {
    while (next < cases.length) {
      const c = cases[next++];
      try {
        out.push(await send(url, c));
      } catch (e) {
        out.push({ c, status: -1, text: `fetch failed: ${(e as Error).message}`, ms: 0 });
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return out;
}

/** Sends raw bytes over TCP and returns what came back before the server closed or `ms` passed. */
async function rawExchange(port: number, request: string, ms = 3000): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode(request));
  let text = "";
  const buf = new Uint8Array(65536);
  const timer = setTimeout(() => conn.close(), ms);
  try {
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
      if (/\r\n\r\n[\s\S]*\}/.test(text) || /content-length: 0\r\n/i.test(text)) break;
    }
  } catch { /* closed by the timer */ }
  clearTimeout(timer);
  try {
    conn.close();
  } catch { /* already closed */ }
  return text;
}

async function serverInfo(url: string): Promise<any> {
  const res = await fetch(`${url}/get_server_info`, { headers: AUTH });
  assertEquals(res.status, 200);
  return await res.json();
}

Deno.test({
  name:
    "hostile: hundreds of broken requests get their 4xx error body; the server then serves the golden request",
  ignore: !HAVE_ENGINE,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    let server: ServerProcess | null = null;
    try {
      server = await startServer([
        "--model-path",
        TINY,
        "--dtype",
        "float32",
        "--context-length",
        String(CONTEXT),
        "--api-key",
        KEY,
        "--enable-metrics",
        "--max-body-bytes",
        String(MAX_BODY),
        "--skip-server-warmup",
      ]);
      const url = server.url;
      const info = await serverInfo(url);
      const cases = hostileCases({
        contextLen: CONTEXT,
        vocabSize: info.engine.vocab_size,
        maxBodyBytes: MAX_BODY,
      });
      const t0 = performance.now();
      const outcomes = await runAll(url, cases);
      const failures = outcomes.map((o) => [o.c.name, judge(o)]).filter(([, why]) => why !== null);
      const slowest = outcomes.reduce((a, b) => (a.ms > b.ms ? a : b));
      console.log(
        `hostile: ${outcomes.length} cases in ${((performance.now() - t0) / 1000).toFixed(1)} s, ` +
          `${failures.length} wrong; slowest ${slowest.c.name} ${slowest.ms.toFixed(0)} ms`,
      );
      assert(outcomes.length >= 500, `only ${outcomes.length} cases`);
      assertEquals(failures.slice(0, 25), []);

      // Lying and over-limit Content-Length on a raw socket: refused at once, no hang, the server lives on.
      const port = server.port;
      const huge = await rawExchange(
        port,
        `POST /generate HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${KEY}\r\ncontent-type: application/json\r\n` +
          `content-length: 999999999999\r\n\r\n{"text":`,
      );
      assert(/^HTTP\/1\.1 413/.test(huge), `over-limit content-length: ${huge.slice(0, 200)}`);
      // A body shorter than its Content-Length, then the client goes away.
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await conn.write(new TextEncoder().encode(
        `POST /generate HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${KEY}\r\ncontent-length: 500\r\n\r\n{"text":"a`,
      ));
      conn.close();
      const garbage = await rawExchange(
        port,
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all\r\n\r\n",
        1500,
      );
      assert(!/^HTTP\/1\.1 5/.test(garbage), `garbage request line answered with ${garbage.slice(0, 40)}`);

      // API key: every route but health and metrics refuses a missing, wrong, longer or shorter key.
      for (
        const path of [
          "/generate",
          "/v1/chat/completions",
          "/v1/completions",
          "/v1/models",
          "/get_server_info",
          "/get_model_info",
          "/flush_cache",
          "/abort_request",
          "/tokenize",
          "/detokenize",
          "/get_load",
        ]
      ) {
        for (
          const auth of [
            undefined,
            "Bearer wrong",
            `Bearer ${KEY}x`,
            `Bearer ${KEY.slice(0, -1)}`,
            KEY,
            `Basic ${KEY}`,
          ]
        ) {
          const headers: Record<string, string> = auth ? { authorization: auth } : {};
          const method = path === "/v1/models" || path.startsWith("/get_") ? "GET" : "POST";
          const res = await fetch(`${url}${path}`, {
            method,
            headers,
            body: method === "POST" ? "{}" : undefined,
          });
          const body = await res.json();
          assertEquals(res.status, 401, `${method} ${path} with ${auth}`);
          assertEquals(body.object, "error");
        }
      }
      for (const path of ["/health", "/metrics"]) {
        const res = await fetch(`${url}${path}`);
        await res.body?.cancel();
        assertEquals(res.status, 200, `${path} is open without a key`);
      }

      // The golden request, exactly.
      const golden = JSON.parse(await Deno.readTextFile(`${TINY}/golden.json`)).cases[0];
      const res = await fetch(`${url}/generate`, {
        method: "POST",
        headers: AUTH,
        body: JSON.stringify({
          input_ids: golden.prompt_ids,
          sampling_params: { temperature: 0, max_new_tokens: golden.output_ids.length, ignore_eos: true },
        }),
      });
      assertEquals(res.status, 200);
      assertEquals((await res.json()).output_ids, golden.output_ids);

      // No request state and no KV held: nothing running or queued, nothing live in the HTTP layer, every
      // slot free once the prefix cache is flushed, and the pool's bookkeeping consistent.
      const after = await serverInfo(url);
      const st = after.internal_states[0];
      assertEquals([st.num_running_reqs, st.num_queue_reqs, st.num_live_requests], [0, 0, 0]);
      assertEquals(st.kv_pool.held_slots, 0);
      assert(st.kv_pool.integrity_ok, "KV pool integrity");
      const flush = await fetch(`${url}/flush_cache`, { method: "POST", headers: AUTH });
      assertEquals(flush.status, 200, await flush.text());
      const flushed = (await serverInfo(url)).internal_states[0].kv_pool;
      assertEquals(flushed.free_slots, flushed.total_slots);
      const log = server.log();
      assert(
        !/panicked|RUST_BACKTRACE|Uncaught|stack backtrace/.test(log),
        `crash output in the log:\n${log.slice(-2000)}`,
      );
      assert(!log.includes("hello hello hello"), "prompts are not logged unless --log-requests");
    } finally {
      await server?.stop();
    }
  },
});

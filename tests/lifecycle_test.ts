/**
 * Lifecycle: readiness, start-up log, graceful drain on SIGTERM/SIGINT with streams in flight, --log-requests
 * privacy, --stream-interval. Process-level tests run the real main.ts around the fake engine
 * (tests/fixtures/fake_server.ts); the real-engine variant lives in e2e_test.ts.
 */
import { assert, assertEquals } from "./assert.ts";
import { FakeEngine } from "./fake_engine.ts";
import { postJson, readSse, REPO_ROOT, startTestServer, TINY } from "./helpers.ts";
import { Shutdown, SHUTDOWN_ABORT_MESSAGE } from "../server/shutdown.ts";
import { type ServerProcess, startServer } from "./real_server.ts";

const FIXTURE = `${REPO_ROOT}/tests/fixtures/fake_server.ts`;
const TIMESTAMPED = /^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] /;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function spawnFakeServer(extra: string[], stepMs = 5): Promise<ServerProcess> {
  return startServer(["--model-path", TINY, ...extra], {
    script: FIXTURE,
    port: 0,
    env: { FAKE_STEP_MS: String(stepMs) },
    readyTimeoutMs: 60_000,
  });
}

/** Opens a stream and returns a reader positioned after its first event. */
async function openStream(url: string, body: unknown) {
  const res = await postJson(`${url}/generate`, { ...(body as object), stream: true });
  assertEquals(res.status, 200);
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  return {
    async rest(): Promise<any[]> {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        text += value;
      }
      return text.split("\n\n").filter((b) => b.trim()).map((b) => {
        const data = b.slice("data: ".length);
        return data === "[DONE]" ? "[DONE]" : JSON.parse(data);
      });
    },
  };
}

Deno.test("SIGTERM: refuses new requests (503, /health too), lets short streams finish, aborts the rest after --shutdown-timeout, frees the engine, exits 0", async () => {
  const secret = "MY-SECRET-PROMPT-4711";
  const s = await spawnFakeServer(["--shutdown-timeout", "1.5"], 10);
  const log = s.log();
  for (const line of log.trim().split("\n").filter((l) => l.startsWith("["))) {
    assert(TIMESTAMPED.test(line), `log line without an SGLang timestamp: ${line}`);
  }
  assert(/Start-up took \d+\.\d\d s\./.test(log), log);
  assert(/Warm-up generation done in \d+\.\d\d s\./.test(log), log);
  assertEquals((await fetch(`${s.url}/health`)).status, 200);

  const short = await openStream(s.url, { text: `${secret} short`, sampling_params: { max_new_tokens: 20 } });
  const long = await openStream(s.url, {
    text: `${secret} long`,
    sampling_params: { max_new_tokens: 100000, ignore_eos: true },
  });
  const signalledAt = Date.now();
  s.signal("SIGTERM");
  await sleep(100);
  const refused = await postJson(`${s.url}/generate`, {
    text: "late",
    sampling_params: { max_new_tokens: 2 },
  });
  assertEquals(refused.status, 503);
  assert((await refused.json()).message.includes("shutting down"));
  const health = await fetch(`${s.url}/health`);
  assertEquals(health.status, 503);
  await health.body?.cancel();

  const shortEvents = await short.rest();
  assertEquals(shortEvents.at(-1), "[DONE]");
  assertEquals(shortEvents.at(-2).meta_info.finish_reason, { type: "length", length: 20 });
  const longEvents = await long.rest();
  const abortedAt = Date.now();
  assertEquals(longEvents.at(-1), "[DONE]");
  assertEquals(longEvents.at(-2).meta_info.finish_reason, { type: "abort", message: SHUTDOWN_ABORT_MESSAGE });
  assert(longEvents.at(-2).meta_info.completion_tokens > 20, "the long stream was cut before the timeout");
  assert(abortedAt - signalledAt >= 1400, `aborted after ${abortedAt - signalledAt} ms, before the timeout`);

  const { code, output } = await s.exited;
  assertEquals(code, 0, output);
  assert(output.includes("Received SIGTERM; refusing new requests"), output);
  assert(output.includes(`Aborting 1 request(s) still running: ${SHUTDOWN_ABORT_MESSAGE}.`), output);
  assert(output.indexOf("fake engine: freed") > output.indexOf("Aborting 1 request"), output);
  assert(/Shutdown complete in \d+\.\d\d s\./.test(output), output);
  assert(!output.includes(secret), "a prompt reached the log without --log-requests");
  assert(!output.includes("hello world"), "an output reached the log without --log-requests");
  assert(!output.includes("legacy behavior"), "Deno's legacy-abort warning is back");
});

Deno.test("SIGINT with nothing running exits 0 at once; --log-requests logs each rid, body and output", async () => {
  const s = await spawnFakeServer(["--log-requests"], 1);
  const r = await postJson(`${s.url}/generate`, {
    text: "Tell me a story",
    rid: "rid-lifecycle-42",
    sampling_params: { max_new_tokens: 4 },
  });
  assertEquals((await r.json()).meta_info.id, "rid-lifecycle-42");
  const chat = await (await postJson(`${s.url}/v1/chat/completions`, {
    messages: [{ role: "user", content: "hi" }],
    max_tokens: 2,
  })).json();
  const started = Date.now();
  s.signal("SIGINT");
  const { code, output } = await s.exited;
  assertEquals(code, 0, output);
  assert(Date.now() - started < 5000, "an idle server must not wait out the shutdown timeout");
  assert(output.includes("Receive: rid=rid-lifecycle-42"), output);
  assert(output.includes("Finish: rid=rid-lifecycle-42"), output);
  assert(output.includes(`Receive: rid=${chat.id}`), `the generated chat rid is not logged:\n${output}`);
  assert(output.includes("Tell me a story"), "--log-requests must log the request body");
  assert(output.includes(" hello world hello world"), "--log-requests must log the output");
  assert(output.includes("fake engine: freed"), output);
});

Deno.test("Shutdown (in-process): a non-streamed request past the timeout ends with the shutdown finish reason; chat says abort", async () => {
  const engine = new FakeEngine([24748, 1917], { context_len: 1 << 20 }, 5);
  const s = await startTestServer(engine);
  let closed = false;
  const close = engine.close.bind(engine);
  engine.close = () => {
    closed = true;
    return close();
  };
  const body = { text: "x", sampling_params: { max_new_tokens: 100000, ignore_eos: true } };
  const native = postJson(`${s.url}/generate`, body).then((r) => r.json());
  const chat = postJson(`${s.url}/v1/chat/completions`, {
    messages: [{ role: "user", content: "hi" }],
    max_tokens: 100000,
    ignore_eos: true,
  }).then((r) => r.json());
  while (engine.runningCount < 2) await sleep(5);
  const shutdown = new Shutdown(s.ctx, s.server, 200);
  const done = shutdown.run("SIGTERM");
  assert(s.ctx.stopping);
  const n = await native;
  assertEquals(n.meta_info.finish_reason, { type: "abort", message: SHUTDOWN_ABORT_MESSAGE });
  assert(n.meta_info.completion_tokens > 0);
  const c = await chat;
  assertEquals(c.choices[0].finish_reason, "abort");
  await done;
  assert(closed, "the engine was not closed");
  assertEquals(engine.runningCount, 0);
  assertEquals(s.ctx.live.size, 0);
});

Deno.test("Shutdown (in-process): a request that finishes within the timeout is not aborted; a second signal hurries", async () => {
  const engine = new FakeEngine([24748, 1917], { context_len: 1 << 20 }, 5);
  const s = await startTestServer(engine);
  const quick = postJson(`${s.url}/generate`, { text: "x", sampling_params: { max_new_tokens: 10 } })
    .then((r) => r.json());
  while (engine.runningCount < 1) await sleep(2);
  const shutdown = new Shutdown(s.ctx, s.server, 10_000);
  const done = shutdown.run("SIGTERM");
  assertEquals((await quick).meta_info.finish_reason, { type: "length", length: 10 });
  assertEquals(engine.aborted.length, 0);
  await done;

  const engine2 = new FakeEngine([24748, 1917], { context_len: 1 << 20 }, 5);
  const s2 = await startTestServer(engine2);
  const slow = postJson(`${s2.url}/generate`, {
    text: "x",
    sampling_params: { max_new_tokens: 100000, ignore_eos: true },
  }).then((r) => r.json());
  while (engine2.runningCount < 1) await sleep(2);
  const shutdown2 = new Shutdown(s2.ctx, s2.server, 60_000);
  const t0 = Date.now();
  shutdown2.run("SIGINT");
  await sleep(50);
  await shutdown2.run("SIGINT");
  assert(Date.now() - t0 < 5000, "the second signal did not cut the wait short");
  assertEquals((await slow).meta_info.finish_reason.message, SHUTDOWN_ABORT_MESSAGE);
});

Deno.test("readiness: /health is 503 and generation routes 503 until ready", async () => {
  const s = await startTestServer(new FakeEngine([24748]));
  try {
    s.ctx.ready = false;
    const h = await fetch(`${s.url}/health`);
    assertEquals(h.status, 503);
    await h.body?.cancel();
    const g = await postJson(`${s.url}/generate`, { text: "x" });
    assertEquals(g.status, 503);
    assertEquals((await g.json()).type, "ServiceUnavailableError");
    s.ctx.ready = true;
    const ok = await fetch(`${s.url}/health`);
    assertEquals(ok.status, 200);
    await ok.body?.cancel();
  } finally {
    await s.close();
  }
});

Deno.test("--stream-interval N: one update per N tokens (the first and the finish at once), same text", async () => {
  const script = [24748, 1917];
  for (const [interval, expected] of [[1, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]], [4, [1, 5, 9, 10]]] as const) {
    const s = await startTestServer(new FakeEngine(script), TINY, ["--stream-interval", String(interval)]);
    try {
      const body = { text: "x", sampling_params: { max_new_tokens: 10, ignore_eos: true }, stream: true };
      const events = (await readSse(await postJson(`${s.url}/generate`, body))).slice(0, -1) as any[];
      assertEquals(events.map((e) => e.meta_info.completion_tokens), [...expected]);
      assertEquals(events.at(-1).text, " hello world".repeat(5));
      const chat = {
        messages: [{ role: "user", content: "hi" }],
        max_tokens: 10,
        stream: true,
        logprobs: true,
      };
      const chunks = (await readSse(await postJson(`${s.url}/v1/chat/completions`, chat))).slice(
        0,
        -1,
      ) as any[];
      const content = chunks.filter((c) => c.choices[0]?.delta?.content).map((c) =>
        c.choices[0].delta.content
      );
      assertEquals(content.join(""), " hello world".repeat(5));
      assertEquals(content.length, expected.length);
      const lps = chunks.flatMap((c) => c.choices[0]?.logprobs?.content ?? []);
      assertEquals(lps.length, 10, "logprobs must cover every token whatever the interval");
    } finally {
      await s.close();
    }
  }
});

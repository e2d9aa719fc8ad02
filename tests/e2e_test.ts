/**
 * End-to-end: the real server process on the real engine library and the fixture models.
 * Runs whenever the library exists; with env CI set, a missing library is a failure, not a skip.
 */
import OpenAI from "openai";
import { assert, assertEquals } from "./assert.ts";
import { postJson, readSse, REPO_ROOT, STORIES, TINY } from "./helpers.ts";

const LIB = Deno.env.get("LLM_ENGINE_LIB") || `${REPO_ROOT}/target/release/libllm_engine.so`;
const haveLib = await Deno.stat(LIB).then(() => true, () => false);
const inCI = !!Deno.env.get("CI");

if (!haveLib && inCI) {
  Deno.test("e2e: the engine library must exist in CI", () => {
    throw new Error(`${LIB} is missing: build it with cargo build --release before the tests`);
  });
}

interface RunningServer {
  url: string;
  stop(): Promise<string>;
  signal(sig: Deno.Signal): void;
  status: Promise<Deno.CommandStatus>;
}

async function startServer(modelDir: string, extra: string[] = []): Promise<RunningServer> {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${REPO_ROOT}/main.ts`, "--model-path", modelDir, "--port", String(port), ...extra],
    env: { LLM_ENGINE_LIB: LIB },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let log = "";
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) log += chunk;
  };
  const readers = Promise.all([collect(child.stdout), collect(child.stderr)]);
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
    await child.status;
    await readers;
    return log;
  };
  const deadline = Date.now() + 180_000;
  while (!log.includes("The server is fired up and ready to roll!")) {
    const exited = await Promise.race([
      child.status.then(() => true),
      new Promise((r) => setTimeout(() => r(false), 200)),
    ]);
    if (exited || Date.now() > deadline) {
      const out = await stop();
      throw new Error(`server did not start:\n${out.slice(-3000)}`);
    }
  }
  return { url, stop, signal: (sig) => child.kill(sig), status: child.status };
}

async function golden(dir: string) {
  return JSON.parse(await Deno.readTextFile(`${dir}/golden.json`)).cases as any[];
}

Deno.test({
  name: "e2e stories260K: greedy 200 tokens from BOS equal the golden text (plain and streamed), log lines",
  ignore: !haveLib,
  sanitizeResources: false,
  fn: async () => {
    const server = await startServer(STORIES, ["--dtype", "float32"]);
    try {
      const cases = await golden(STORIES);
      const first = cases[0];
      const body = {
        input_ids: first.prompt_ids,
        sampling_params: { temperature: 0, max_new_tokens: first.max_new_tokens },
      };
      const r = await (await postJson(`${server.url}/generate`, body)).json();
      assertEquals(r.text, first.output_text);
      assertEquals(r.output_ids, first.output_ids);
      assertEquals(r.meta_info.finish_reason, { type: "length", length: first.max_new_tokens });
      const events = await readSse(await postJson(`${server.url}/generate`, { ...body, stream: true }));
      assertEquals(events.at(-1), "[DONE]");
      let printed = "";
      for (const e of events.slice(0, -1) as any[]) printed += e.text.slice(printed.length);
      assertEquals(printed, first.output_text);
      for (const c of cases.slice(1)) {
        const g = await (await postJson(`${server.url}/generate`, {
          text: c.prompt,
          sampling_params: { temperature: 0, max_new_tokens: c.max_new_tokens },
        })).json();
        assertEquals(g.output_ids, c.output_ids, c.prompt);
        assertEquals(g.text, c.output_text);
      }
      const again = await (await postJson(`${server.url}/generate`, body)).json();
      assert(
        again.meta_info.cached_tokens > 0 || again.meta_info.prompt_tokens === 1,
        JSON.stringify(again.meta_info),
      );
      const chat = await postJson(`${server.url}/v1/chat/completions`, {
        messages: [{ role: "user", content: "hi" }],
      });
      assertEquals(chat.status, 400);
      await chat.body?.cancel();
    } finally {
      const log = await server.stop();
      assert(
        /\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] INFO: {5}127\.0\.0\.1:\d+ - "POST \/generate HTTP\/1\.1" 200 OK/
          .test(log),
        log.slice(-2000),
      );
    }
  },
});

Deno.test({
  name: "e2e tiny-random-llama-3.1 float32: golden output_ids; openai client chat plain and streamed",
  ignore: !haveLib,
  sanitizeResources: false,
  fn: async () => {
    const server = await startServer(TINY, ["--dtype", "float32"]);
    try {
      const cases = await golden(TINY);
      for (const c of cases) {
        const body = {
          input_ids: c.prompt_ids,
          sampling_params: { temperature: 0, max_new_tokens: c.output_ids.length, ignore_eos: true },
        };
        const r = await (await postJson(`${server.url}/generate`, body)).json();
        assertEquals(r.output_ids, c.output_ids, JSON.stringify(c.messages ?? c.text));
      }
      const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "None" });
      for (const c of cases.filter((x) => x.kind === "chat")) {
        const args = { model: TINY, messages: c.messages, temperature: 0, max_tokens: c.output_ids.length };
        const plain = await client.chat.completions.create(args);
        assertEquals(plain.usage!.prompt_tokens, c.prompt_ids.length);
        if (!c.output_ids.some((t: number) => [128001, 128008, 128009].includes(t))) {
          // The golden text is HF's decode with U+FFFD for byte sequences that never complete; we drop those.
          assertEquals(plain.choices[0].message.content, c.output_text.replaceAll("\uFFFD", ""));
        }
        const parts: string[] = [];
        const finishes: string[] = [];
        for await (const chunk of await client.chat.completions.create({ ...args, stream: true })) {
          if (chunk.choices[0]?.delta?.content) parts.push(chunk.choices[0].delta.content);
          if (chunk.choices[0]?.finish_reason) finishes.push(chunk.choices[0].finish_reason);
        }
        assertEquals(parts.join(""), plain.choices[0].message.content);
        assertEquals(finishes.length, 1);
      }
      const health = await fetch(`${server.url}/health_generate`);
      assertEquals(health.status, 200);
      await health.body?.cancel();
    } finally {
      await server.stop();
    }
  },
});

Deno.test({
  name:
    "e2e SIGTERM with streams in flight: the short one finishes, the long one ends 'server shutting down', exit 0",
  ignore: !haveLib,
  sanitizeResources: false,
  fn: async () => {
    const server = await startServer(TINY, ["--dtype", "float32", "--shutdown-timeout", "1"]);
    let stopped = false;
    try {
      const open = async (maxNew: number) => {
        const res = await postJson(`${server.url}/generate`, {
          text: "Once upon a time",
          sampling_params: { temperature: 0, max_new_tokens: maxNew, ignore_eos: true },
          stream: true,
        });
        assertEquals(res.status, 200);
        return readSse(res);
      };
      const short = open(8);
      const long = open(100000);
      await new Promise((r) => setTimeout(r, 300));
      server.signal("SIGTERM");
      const [s, l] = (await Promise.all([short, long])) as any[][];
      assertEquals(s.at(-1), "[DONE]");
      assertEquals(s.at(-2).meta_info.finish_reason, { type: "length", length: 8 });
      assertEquals(l.at(-1), "[DONE]");
      assertEquals(l.at(-2).meta_info.finish_reason, { type: "abort", message: "server shutting down" });
      const status = await server.status;
      stopped = true;
      assertEquals(status.code, 0);
    } finally {
      const log = await server.stop();
      if (stopped) {
        assert(log.includes("Received SIGTERM; refusing new requests"), log.slice(-3000));
        assert(/Shutdown complete in \d+\.\d\d s\./.test(log), log.slice(-3000));
        assert(/Start-up took \d+\.\d\d s\./.test(log), log.slice(-3000));
      }
    }
  },
});

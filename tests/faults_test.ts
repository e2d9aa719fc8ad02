/**
 * Faults: start-up failures (missing or broken model files, header lies, config values that do not fit, port in use,
 * an address that cannot be bound, a missing engine library) end with one clear message and a non-zero exit, never
 * a crash dump; a stalled scheduler makes /health answer 503 at once; the server binds only --host.
 */
import { assert, assertEquals } from "./assert.ts";
import { FakeEngine } from "./fake_engine.ts";
import { startTestServer, STORIES } from "./helpers.ts";
import { HAVE_ENGINE, runServerToExit, startServer } from "./real_server.ts";
import type { EngineStats } from "../server/engine/client.ts";

const CRASH_DUMP = /Uncaught|stack backtrace|panicked at|RUST_BACKTRACE|\n\s+at .+:\d+:\d+/;

/** A copy of stories260K in a temp folder, with `change` applied to it. */
async function brokenModel(change: (dir: string) => Promise<void>): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "llm-fault-" });
  for await (const e of Deno.readDir(STORIES)) {
    if (e.isFile) await Deno.copyFile(`${STORIES}/${e.name}`, `${dir}/${e.name}`);
  }
  await change(dir);
  return dir;
}

async function editHeader(dir: string, edit: (h: Record<string, any>) => void): Promise<void> {
  const bytes = await Deno.readFile(`${dir}/model.safetensors`);
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  edit(header);
  const text = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + text.length + bytes.length - 8 - n);
  new DataView(out.buffer).setBigUint64(0, BigInt(text.length), true);
  out.set(text, 8);
  out.set(bytes.subarray(8 + n), 8 + text.length);
  await Deno.writeFile(`${dir}/model.safetensors`, out);
}

const firstTensor = (h: Record<string, any>) => Object.keys(h).find((k) => k !== "__metadata__")!;

interface StartupFault {
  name: string;
  args: () => string[] | Promise<string[]>;
  env?: Record<string, string>;
  /** The message must say this (case-insensitive). */
  says: RegExp;
}

const blocker = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const busyPort = (blocker.addr as Deno.NetAddr).port;

const FAULTS: StartupFault[] = [
  {
    name: "missing model folder",
    args: () => ["--model-path", "/nonexistent/model"],
    says: /nonexistent|not found|no such/i,
  },
  {
    name: "no weights file",
    args: async () => ["--model-path", await brokenModel((d) => Deno.remove(`${d}/model.safetensors`))],
    says: /safetensors/i,
  },
  {
    name: "truncated safetensors",
    args: async () => [
      "--model-path",
      await brokenModel(async (d) => {
        const b = await Deno.readFile(`${d}/model.safetensors`);
        await Deno.writeFile(`${d}/model.safetensors`, b.subarray(0, b.length >> 1));
      }),
    ],
    says: /truncated|out of range|exceeds/i,
  },
  {
    name: "corrupt safetensors header",
    args: async () => [
      "--model-path",
      await brokenModel(async (d) => {
        const b = await Deno.readFile(`${d}/model.safetensors`);
        b.fill(0x7b, 8, 64);
        await Deno.writeFile(`${d}/model.safetensors`, b);
      }),
    ],
    says: /header|JSON/i,
  },
  {
    name: "header offsets out of range",
    args: async () => [
      "--model-path",
      await brokenModel((d) => editHeader(d, (h) => (h[firstTensor(h)].data_offsets = [0, 1e12]))),
    ],
    says: /out of range/i,
  },
  {
    name: "header with a wrong dtype",
    args: async () => [
      "--model-path",
      await brokenModel((d) => editHeader(d, (h) => (h[firstTensor(h)].dtype = "I64"))),
    ],
    says: /dtype|span/i,
  },
  {
    name: "header with a wrong shape",
    args: async () => [
      "--model-path",
      await brokenModel((d) => editHeader(d, (h) => h[firstTensor(h)].shape.reverse().push(2))),
    ],
    says: /shape|span/i,
  },
  {
    name: "config values that do not fit the weights",
    args: async () => [
      "--model-path",
      await brokenModel(async (d) => {
        const c = JSON.parse(await Deno.readTextFile(`${d}/config.json`));
        c.hidden_size = 96;
        await Deno.writeTextFile(`${d}/config.json`, JSON.stringify(c));
      }),
    ],
    says: /shape|hidden|expected/i,
  },
  {
    name: "config.json not JSON",
    args:
      async () => ["--model-path", await brokenModel((d) => Deno.writeTextFile(`${d}/config.json`, "{oops"))],
    says: /config\.json/i,
  },
  {
    name: "port in use",
    args: () => ["--model-path", STORIES, "--port", String(busyPort)],
    says: /in use|port/i,
  },
  {
    name: "address that cannot be bound",
    args: () => ["--model-path", STORIES, "--host", "203.0.113.7"],
    says: /203\.0\.113\.7|address|bind/i,
  },
  {
    name: "engine library missing",
    args: () => ["--model-path", STORIES],
    env: { LLM_ENGINE_LIB: "/nonexistent/libllm_engine.so" },
    says: /engine library|libllm_engine/i,
  },
];

Deno.test({
  name: "faults: start-up failures give one clear message and a non-zero exit, never a crash dump",
  ignore: !HAVE_ENGINE,
  sanitizeResources: false,
  fn: async () => {
    try {
      const results = await Promise.all(FAULTS.map(async (f) => {
        const args = await f.args();
        const port = args.includes("--port") ? [] : ["--port", "0"];
        return {
          f,
          ...(await runServerToExit([...args, ...port, "--skip-server-warmup"], f.env ?? {}, 60_000)),
        };
      }));
      const wrong = results.filter(({ f, code, signal, output }) =>
        code === 0 || signal !== null || !f.says.test(output) || CRASH_DUMP.test(output) ||
        output.includes("fired up")
      ).map(({ f, code, output }) => `${f.name}: exit ${code}\n${output.slice(-800)}`);
      assertEquals(wrong, []);
    } finally {
      blocker.close();
    }
  },
});

Deno.test({
  name: "faults: the server listens only on --host",
  ignore: !HAVE_ENGINE,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const other = Deno.networkInterfaces().find((i) => i.family === "IPv4" && !i.address.startsWith("127."));
    const server = await startServer(["--model-path", STORIES, "--skip-server-warmup"]);
    try {
      const ok = await fetch(`${server.url}/health`);
      await ok.body?.cancel();
      assertEquals(ok.status, 200);
      if (other) {
        const refused = await Deno.connect({ hostname: other.address, port: server.port }).then(
          (c) => (c.close(), false),
          () => true,
        );
        assert(refused, `port ${server.port} is reachable on ${other.address}`);
      }
      const log = await server.stop();
      assert(!CRASH_DUMP.test(log), log.slice(-1000));
    } finally {
      await server.stop();
    }
  },
});

class StalledEngine extends FakeEngine {
  stalled = false;
  override stats(): EngineStats {
    return { ...super.stats(), watchdog_stalled: this.stalled };
  }
}

Deno.test("faults: /health answers 503 at once while the watchdog reports a stalled step", async () => {
  const engine = new StalledEngine([5, 6, 7]);
  const server = await startTestServer(engine);
  try {
    const healthy = await fetch(`${server.url}/health`);
    await healthy.body?.cancel();
    assertEquals(healthy.status, 200);
    engine.stalled = true;
    const t0 = performance.now();
    const stalled = await fetch(`${server.url}/health`);
    assertEquals(stalled.status, 503);
    assert((await stalled.text()).includes("stuck"));
    assert(performance.now() - t0 < 1000, "answered without waiting for a generation");
    engine.stalled = false;
    const again = await fetch(`${server.url}/health`);
    await again.body?.cancel();
    assertEquals(again.status, 200);
  } finally {
    await server.close();
  }
});

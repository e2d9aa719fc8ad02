/**
 * --device on a host without a usable GPU (this CI): `auto` says once why CUDA is not used and serves
 * on the CPU; `cuda` refuses to start with that reason. Runs the real main.ts on the real engine
 * library; with env CI set, a missing library is a failure (e2e_test.ts reports it), not a pass.
 */
import { assert, assertEquals } from "./assert.ts";
import { engineConfig, parseServerArgs } from "../server/args.ts";
import { postJson, TINY } from "./helpers.ts";
import { HAVE_ENGINE, spawnServer, startRealServer } from "./real_server.ts";

const FALLBACK = /CUDA not used: (.+); running on CPU/g;

Deno.test("device args: --device, --cuda-graph-max-bs and --disable-cuda-graph reach the engine config", () => {
  const plain = engineConfig(parseServerArgs(["--model-path", "m"])!);
  assertEquals([plain.device, plain.disable_cuda_graph, "cuda_graph_max_bs" in plain], ["auto", false, false]);
  const gpu = engineConfig(
    parseServerArgs(["--model-path", "m", "--device", "cuda", "--cuda-graph-max-bs", "32", "--disable-cuda-graph"])!,
  );
  assertEquals([gpu.device, gpu.cuda_graph_max_bs, gpu.disable_cuda_graph], ["cuda", 32, true]);
  for (const bad of [["--device", "tpu"], ["--cuda-graph-max-bs", "0"], ["--cuda-graph-max-bs", "x"]]) {
    let threw = false;
    try {
      parseServerArgs(["--model-path", "m", ...bad]);
    } catch (e) {
      threw = (e as Error).message.includes(bad[0]);
    }
    assert(threw, `${bad.join(" ")} must be refused naming the flag`);
  }
});

Deno.test({
  name: "device auto without a usable GPU: one fallback line naming the reason, then serves on the CPU",
  ignore: !HAVE_ENGINE,
  sanitizeResources: false,
  fn: async () => {
    const server = await startRealServer(TINY, ["--device", "auto", "--max-total-tokens", "4096"], {
      readyTimeoutMs: 120_000,
    });
    try {
      const res = await postJson(`${server.url}/generate`, {
        input_ids: [1, 2, 3],
        sampling_params: { temperature: 0, max_new_tokens: 4, ignore_eos: true },
      });
      assertEquals(res.status, 200);
      const body = await res.json();
      assertEquals(body.meta_info.completion_tokens, 4);
      const info = await (await fetch(`${server.url}/get_server_info`)).json();
      assertEquals([info.device, info.engine.device], ["auto", "cpu"]);
    } finally {
      const log = await server.stop();
      const lines = [...log.matchAll(FALLBACK)];
      assertEquals(lines.length, 1, `want exactly one fallback line, got:\n${log.slice(-3000)}`);
      assert(lines[0][1].trim().length > 10, `the fallback line must say why: ${lines[0][0]}`);
    }
  },
});

Deno.test({
  name: "device cuda without a usable GPU: exits non-zero with a clear message",
  ignore: !HAVE_ENGINE,
  sanitizeResources: false,
  fn: async () => {
    const server = spawnServer(["--model-path", TINY, "--device", "cuda"]);
    const timer = setTimeout(() => server.stop(), 120_000);
    const { code, output: log } = await server.exited;
    clearTimeout(timer);
    assert(code !== 0, `--device cuda must fail here, exited ${code}:\n${log.slice(-2000)}`);
    assert(/--device cuda: CUDA is unavailable: \S+/.test(log), `no clear CUDA message in:\n${log.slice(-2000)}`);
    assert(!log.includes("The server is fired up"), "must not serve");
    assertEquals([...log.matchAll(FALLBACK)].length, 0, "cuda must not fall back to the CPU");
  },
});

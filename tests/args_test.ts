import { assert, assertEquals, assertThrows } from "./assert.ts";
import { ArgsError, engineConfig, parseServerArgs } from "../server/args.ts";
import { REPO_ROOT } from "./helpers.ts";

Deno.test("args: SGLang defaults and engine config", () => {
  const a = parseServerArgs(["--model-path", "/m/x/"])!;
  assertEquals([a.host, a.port, a.served_model_name, a.max_prefill_tokens, a.chunked_prefill_size], [
    "127.0.0.1",
    30000,
    "/m/x",
    16384,
    8192,
  ]);
  assertEquals(a.decode_log_interval, 40);
  assertEquals([a.shutdown_timeout, a.stream_interval, a.log_requests], [30, 1, false]);
  const timed = parseServerArgs(["--model-path", "m", "--shutdown-timeout", "2.5", "--stream-interval", "8"])!;
  assertEquals([timed.shutdown_timeout, timed.stream_interval], [2.5, 8]);
  const b = parseServerArgs([
    "--model-path",
    "m",
    "--chunked-prefill-size",
    "-1",
    "--disable-radix-cache",
    "--schedule-policy",
    "lpm",
    "--dtype",
    "float32",
  ])!;
  const cfg = engineConfig(b);
  assertEquals([cfg.chunked_prefill_size, cfg.disable_radix_cache, cfg.schedule_policy, cfg.dtype], [
    -1,
    true,
    "lpm",
    "float32",
  ]);
  assertEquals(parseServerArgs(["--model-path", "m"], { LLM_SERVER_API_KEY: "k" })!.api_key, "k");
  assertEquals(parseServerArgs(["--help"]), null);
});

Deno.test("args: bad input is an ArgsError naming the flag", () => {
  for (
    const argv of [
      ["--model-path", "m", "--bogus"],
      ["--model-path", "m", "--port", "x"],
      ["--model-path", "m", "--dtype", "fp8"],
      [],
      ["--model-path", "m", "--mem-fraction-static", "2"],
      ["--model-path", "m", "--shutdown-timeout", "-1"],
      ["--model-path", "m", "--shutdown-timeout", "soon"],
      ["--model-path", "m", "--stream-interval", "0"],
    ]
  ) {
    const e = assertThrows(() => parseServerArgs(argv), ArgsError);
    assert(e.message.length > 0);
  }
});

async function runMain(args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${REPO_ROOT}/main.ts`, ...args],
    stdout: "piped",
    stderr: "piped",
    env: { LLM_ENGINE_LIB: "/nonexistent/libllm_engine.so" },
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test("main: unknown flag exits 2 with one line; missing model folder exits 1 naming it", async () => {
  const bad = await runMain(["--model-path", "/tmp", "--frobnicate"]);
  assertEquals(bad.code, 2);
  assertEquals(bad.stderr.trim().split("\n").length, 1);
  assert(bad.stderr.includes("frobnicate"));
  const missing = await runMain(["--model-path", "/nonexistent/model-dir", "--port", "0"]);
  assertEquals(missing.code, 1);
  assert(missing.stderr.includes("/nonexistent/model-dir"));
  const empty = await Deno.makeTempDir();
  const noConfig = await runMain(["--model-path", empty, "--port", "0"]);
  assertEquals(noConfig.code, 1);
  assert(noConfig.stderr.includes("config.json"));
  await Deno.remove(empty);
});

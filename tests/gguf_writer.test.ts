/**
 * scripts/gguf_writer.ts: quantizers follow ggml's reference definitions, and a GGUF written from
 * HF weights is a model llama.cpp runs exactly like HF transformers did (stories260K golden greedy
 * output, when node-llama-cpp is installed; see scripts/llamacpp_vectors.mjs).
 */
import { assert, assertEquals } from "./assert.ts";
import { MODELS_DIR, NODE_LLAMA_CPP_DIR, pathExists } from "./helpers.ts";
import { encode, f16BitsToF32, f32ToF16Bits, permuteQK } from "../scripts/gguf_writer.ts";
import { seededRandom } from "../scripts/lib/seeded_random.ts";


/** Independent decoder of the block formats (ggml's dequantize_row_* definitions). */
function decode(type: "q8_0" | "q4_0" | "q4_1", b: Uint8Array, n: number): Float32Array {
  const dv = new DataView(b.buffer, b.byteOffset);
  const out = new Float32Array(n);
  const bb = { q8_0: 34, q4_0: 18, q4_1: 20 }[type];
  for (let k = 0; k < n / 32; k++) {
    const d = f16BitsToF32(dv.getUint16(k * bb, true));
    for (let j = 0; j < 32; j++) {
      if (type === "q8_0") out[k * 32 + j] = dv.getInt8(k * bb + 2 + j) * d;
      else {
        const byte = b[k * bb + bb - 16 + (j % 16)];
        const q = j < 16 ? byte & 15 : byte >> 4;
        out[k * 32 + j] = type === "q4_0" ? (q - 8) * d : q * d + f16BitsToF32(dv.getUint16(k * bb + 2, true));
      }
    }
  }
  return out;
}

Deno.test("f16 conversion rounds to nearest even and covers subnormals", () => {
  assertEquals(f32ToF16Bits(1), 0x3c00);
  assertEquals(f32ToF16Bits(-2), 0xc000);
  assertEquals(f32ToF16Bits(65504), 0x7bff);
  assertEquals(f32ToF16Bits(1e6), 0x7c00);
  assertEquals(f32ToF16Bits(2 ** -24), 0x0001);
  assertEquals(f32ToF16Bits(1 + 2 ** -11), 0x3c00); // tie → even
  assertEquals(f32ToF16Bits(1 + 3 * 2 ** -11), 0x3c02); // tie → even (up)
  for (let h = 0; h < 0x7c00; h += 7) assertEquals(f32ToF16Bits(f16BitsToF32(h)), h);
});

Deno.test("quantized blocks decode to within half a step of the input", () => {
  const next = seededRandom(3);
  const x = new Float32Array(32 * 64).map((_, i) => (next() * 2 - 1) * (i % 32 === 5 ? 4 : 1));
  for (const type of ["q8_0", "q4_0", "q4_1"] as const) {
    const y = decode(type, encode(type, x), x.length);
    for (let k = 0; k < x.length / 32; k++) {
      const blk = x.subarray(k * 32, k * 32 + 32);
      const amax = Math.max(...blk.map(Math.abs)), range = Math.max(...blk) - Math.min(...blk);
      // Step: amax/127 (q8_0), amax/8 (q4_0), range/15 (q4_1); f16 scales add a little. Q4_0 spans
      // -8..7 steps, so a value opposite the extreme can be clipped by one whole step.
      const step = type === "q8_0" ? amax / 127 : type === "q4_0" ? amax / 8 : range / 15;
      const bound = (type === "q4_0" ? step : step * 0.5) + amax * 2e-3 + 1e-6;
      for (let j = 0; j < 32; j++) {
        const err = Math.abs(y[k * 32 + j] - blk[j]);
        assert(err <= bound, `${type} block ${k} elem ${j}: err ${err} step ${step}`);
      }
    }
  }
  // ggml's Q4_0 maps the largest-magnitude value exactly onto -8 · d.
  const b = encode("q4_0", new Float32Array(32).map((_, i) => (i === 3 ? -2 : i / 32)));
  assertEquals(decode("q4_0", b, 32)[3], -2);
});

Deno.test("Q/K permutation interleaves the rotate-half halves per head", () => {
  const rows = 8, cols = 2, w = new Float32Array(rows * cols).map((_, i) => Math.floor(i / cols));
  const p = permuteQK(w, rows, cols, 2);
  assertEquals(Array.from(p.filter((_, i) => i % cols === 0)), [0, 2, 1, 3, 4, 6, 5, 7]);
});

Deno.test({
  name: "llama.cpp runs a stories260K GGUF written from HF weights exactly like HF (golden greedy ids)",
  // Minutes of node-llama-cpp time on a busy 2-core machine: opt in with LLM_TEST_LLAMACPP_GREEDY=1.
  ignore: Deno.env.get("LLM_TEST_LLAMACPP_GREEDY") !== "1" ||
    !pathExists(`${NODE_LLAMA_CPP_DIR}/node_modules/node-llama-cpp/dist/index.js`) || !pathExists(`${MODELS_DIR}/stories260K/model.safetensors`),
  async fn() {
    const dir = `${MODELS_DIR}/stories260K`;
    const gguf = await Deno.makeTempFile({ suffix: ".gguf" });
    const vectors = await Deno.makeTempFile({ suffix: ".json" });
    const writer = new URL("../scripts/gguf_writer.ts", import.meta.url).pathname;
    const w = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", writer, "--config", `${dir}/config.json`, "--tokenizer", `${dir}/tokenizer.json`, "--type", "f32", "--weights", `${dir}/model.safetensors`, "--out", gguf],
    }).output();
    assertEquals(w.code, 0, new TextDecoder().decode(w.stderr));
    const script = new URL("../scripts/llamacpp_vectors.mjs", import.meta.url).pathname;
    const r = await new Deno.Command("node", {
      args: [script, "--model", gguf, "--out", vectors, "--nlc", NODE_LLAMA_CPP_DIR, "--golden", `${dir}/golden.json`],
      stderr: "inherit",
    }).output();
    assertEquals(r.code, 0);
    const golden = JSON.parse(await Deno.readTextFile(`${dir}/golden.json`));
    const got = JSON.parse(await Deno.readTextFile(vectors));
    assertEquals(got.greedy.length, golden.cases.length);
    golden.cases.forEach((c: any, i: number) => assertEquals(got.greedy[i].output_ids, c.output_ids, `case ${i}: ${c.prompt}`));
    // Tokenization through llama.cpp agrees with the HF prompt ids (llama.cpp's tokenize adds no BOS).
    for (const c of golden.cases) {
      const t = got.tokenize.find((v: any) => v.text === c.prompt && v.special);
      if (t) assertEquals([1, ...t.ids], c.prompt_ids, c.prompt);
    }
    await Deno.remove(gguf);
    await Deno.remove(vectors);
  },
});

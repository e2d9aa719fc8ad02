/** GGUF as a model source: which file a --model-path names, and the config/tokenizer the server takes from its metadata. */
import { ModelFolderError } from "../errors.ts";
import type { ModelConfig } from "../model_config.ts";
import { TextTokenizer } from "../text/tokenizer.ts";
import { GgufFormatError, metaString, readGgufMetadata } from "./reader.ts";
import { tokenizerFromGguf } from "./tokenizer_from_gguf.ts";

/**
 * The GGUF file `path` stands for, or null for a Hugging Face folder. Same rules as the engine's loader
 * (engine-rs/src/loader/gguf.rs): a .gguf file (or a file with the GGUF magic); a folder holding exactly one
 * .gguf and, unless --load-format gguf, no config.json.
 */
export async function resolveGgufFile(path: string, loadFormat: string): Promise<string | null> {
  const forced = loadFormat === "gguf";
  let stat: Deno.FileInfo;
  try {
    stat = await Deno.stat(path);
  } catch {
    if (forced) throw new ModelFolderError(`--model-path ${path}: no such GGUF file or folder`);
    return null;
  }
  if (stat.isFile) {
    if (path.toLowerCase().endsWith(".gguf") || await hasGgufMagic(path)) return await Deno.realPath(path);
    throw new ModelFolderError(`--model-path ${path}: a file, but not a GGUF file (give a .gguf or a model folder)`);
  }
  if (!stat.isDirectory) return null;
  if (!forced && await exists(`${path}/config.json`)) return null;
  const found: string[] = [];
  for await (const e of Deno.readDir(path)) {
    if (e.isFile && e.name.toLowerCase().endsWith(".gguf")) found.push(e.name);
  }
  found.sort();
  if (found.length === 0) {
    if (forced) throw new ModelFolderError(`--model-path ${path}: no .gguf file in the folder`);
    return null;
  }
  if (found.length > 1) {
    throw new ModelFolderError(
      `--model-path ${path}: the folder holds ${found.length} .gguf files (${found.join(", ")}); give the file itself`,
    );
  }
  return await Deno.realPath(`${path}/${found[0]}`);
}

/** What the server reads from a GGUF file: the /model_info facts and the tokenizer (with its chat template). */
export function loadGgufModel(file: string): { modelConfig: ModelConfig; tokenizer: TextTokenizer } {
  try {
    const meta = readGgufMetadata(file);
    const arch = metaString(meta.metadata, "general.architecture") ?? null;
    const t = tokenizerFromGguf(meta.metadata);
    const tokenizer = TextTokenizer.fromParts(t.tokenizerJson, t.tokenizerConfig, t.eosTokenIds, file);
    const architectures = arch === "llama" ? ["LlamaForCausalLM"] : [];
    return { modelConfig: { modelPath: file, modelType: arch, architectures }, tokenizer };
  } catch (e) {
    if (e instanceof GgufFormatError || e instanceof ModelFolderError) {
      throw new ModelFolderError(`${file}: ${(e as Error).message}`);
    }
    throw e;
  }
}

async function hasGgufMagic(path: string): Promise<boolean> {
  const f = await Deno.open(path);
  try {
    const head = new Uint8Array(4);
    const n = await f.read(head);
    return n === 4 && new TextDecoder().decode(head) === "GGUF";
  } finally {
    f.close();
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

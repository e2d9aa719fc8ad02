import { ModelFolderError } from "./errors.ts";

/** The parts of a model folder's config.json that the API reports (/model_info). */
export interface ModelConfig {
  /** Absolute path of the model folder, as the router needs it to load the tokenizer itself. */
  modelPath: string;
  modelType: string | null;
  architectures: string[];
}

/** Checks the folder holds what the server needs and reads config.json; throws ModelFolderError. */
export async function loadModelConfig(dir: string): Promise<ModelConfig> {
  let stat: Deno.FileInfo;
  try {
    stat = await Deno.stat(dir);
  } catch {
    throw new ModelFolderError(`--model-path ${dir}: no such folder`);
  }
  if (!stat.isDirectory) {
    throw new ModelFolderError(`--model-path ${dir}: not a folder (give the model's folder)`);
  }
  for (const file of ["config.json", "tokenizer.json"]) {
    try {
      await Deno.stat(`${dir}/${file}`);
    } catch {
      throw new ModelFolderError(`--model-path ${dir}: ${dir}/${file} is missing`);
    }
  }
  let config: Record<string, unknown>;
  try {
    config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  } catch (e) {
    throw new ModelFolderError(`--model-path ${dir}: config.json is not valid JSON: ${(e as Error).message}`);
  }
  if (config === null || typeof config !== "object" || Array.isArray(config)) {
    throw new ModelFolderError(`--model-path ${dir}: config.json must hold a JSON object`);
  }
  const architectures = Array.isArray(config.architectures)
    ? config.architectures.filter((a): a is string => typeof a === "string")
    : [];
  return {
    modelPath: await absoluteFolder(dir),
    modelType: typeof config.model_type === "string" ? config.model_type : null,
    architectures,
  };
}

async function absoluteFolder(dir: string): Promise<string> {
  try {
    return await Deno.realPath(dir);
  } catch {
    return dir.startsWith("/") ? dir : `${Deno.cwd()}/${dir}`;
  }
}

import type { ServerArgs } from "../server/args.ts";
import { parseServerArgs } from "../server/args.ts";
import type { ServerContext } from "../server/context.ts";
import type { EngineLike } from "../server/engine/client.ts";
import { Metrics } from "../server/metrics.ts";
import { loadModelConfig } from "../server/model_config.ts";
import { makeHandler } from "../server/router.ts";
import { setLogLevel } from "../server/log.ts";
import { ChatTemplate } from "../server/text/chat_template.ts";
import { TextTokenizer } from "../server/text/tokenizer.ts";

setLogLevel("warning");

export const REPO_ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
export const MODELS_DIR = Deno.env.get("LLM_MODELS_DIR") ?? `${REPO_ROOT}/../shared/models`;
export const TINY = `${MODELS_DIR}/tiny-random-llama-3.1`;
export const STORIES = `${MODELS_DIR}/stories260K`;
/** Where node-llama-cpp is installed, for the checks against llama.cpp (they are skipped without it). */
export const NODE_LLAMA_CPP_DIR = Deno.env.get("NODE_LLAMA_CPP_DIR") ?? "/tmp/nlc";

export function pathExists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** The fixture's golden cases (from HF transformers): prompts and their greedy continuations. */
export async function golden(dir: string): Promise<any[]> {
  return JSON.parse(await Deno.readTextFile(`${dir}/golden.json`)).cases;
}

const tokenizers = new Map<string, TextTokenizer>();
export async function loadTokenizer(dir: string): Promise<TextTokenizer> {
  if (!tokenizers.has(dir)) tokenizers.set(dir, await TextTokenizer.load(dir));
  return tokenizers.get(dir)!;
}

/** An in-process server (real router, tokenizer and template) around the given engine. */
export async function startTestServer(engine: EngineLike, modelDir = TINY, extraArgs: string[] = []) {
  const args = parseServerArgs(["--model-path", modelDir, "--port", "0", ...extraArgs]) as ServerArgs;
  const tokenizer = await loadTokenizer(modelDir);
  const ctx: ServerContext = {
    args,
    engine,
    info: engine.info(),
    tokenizer,
    chatTemplate: await ChatTemplate.load(tokenizer),
    modelConfig: await loadModelConfig(modelDir),
    metrics: new Metrics(),
    ready: true,
    stopping: false,
    live: new Map(),
  };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, makeHandler(ctx));
  const url = `http://127.0.0.1:${server.addr.port}`;
  return {
    ctx,
    url,
    server,
    async close() {
      await server.shutdown();
      await engine.close();
    },
  };
}

/** Parses an SSE body into its data payloads (JSON objects, or the string "[DONE]"). */
export async function readSse(res: Response): Promise<unknown[]> {
  const text = await res.text();
  const events: unknown[] = [];
  for (const block of text.split("\n\n")) {
    if (block.trim() === "") continue;
    if (!block.startsWith("data: ")) throw new Error(`not an SSE data block: ${JSON.stringify(block)}`);
    const payload = block.slice(6);
    events.push(payload === "[DONE]" ? "[DONE]" : JSON.parse(payload));
  }
  return events;
}

export async function postJson(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<Response> {
  return await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
}

/** llm-server: parse args → open the engine → Deno.serve(router) → drain on SIGTERM. */
import { runCliCommand } from "./server/cli/commands.ts";
import { ArgsError, engineConfig, helpText, parseServerArgs, ServerArgs } from "./server/args.ts";
import type { ServerContext } from "./server/context.ts";
import { Engine } from "./server/engine/client.ts";
import { defaultLibraryPath } from "./server/engine/ffi.ts";
import { ApiError, errorBody, ModelFolderError } from "./server/errors.ts";
import { log, setLogLevel } from "./server/log.ts";
import { Metrics } from "./server/metrics.ts";
import { oneTokenGeneration } from "./server/native/admin.ts";
import { makeHandler } from "./server/router.ts";
import { ChatTemplate } from "./server/text/chat_template.ts";
import { TextTokenizer } from "./server/text/tokenizer.ts";

async function main(): Promise<number> {
  // Subcommands (--version, install-service, ...) first: in the single-file build this also sets LLM_ENGINE_LIB.
  const cliExit = await runCliCommand(Deno.args);
  if (cliExit !== null) return cliExit;
  let args: ServerArgs | null;
  try {
    args = parseServerArgs(Deno.args, Deno.env.toObject());
  } catch (e) {
    if (e instanceof ArgsError) {
      console.error(`llm-server: error: ${e.message} (see --help)`);
      return 2;
    }
    throw e;
  }
  if (args === null) {
    console.log(helpText());
    return 0;
  }
  setLogLevel(args.log_level);
  const { api_key: apiKey, ...printable } = args;
  log(`server_args=${JSON.stringify({ ...printable, api_key: apiKey === null ? null : "***" })}`);

  let tokenizer: TextTokenizer;
  let chatTemplate: ChatTemplate;
  try {
    await checkModelFolder(args.model_path);
    tokenizer = await TextTokenizer.load(args.model_path);
    chatTemplate = await ChatTemplate.load(tokenizer, args.chat_template ?? undefined);
  } catch (e) {
    if (e instanceof ModelFolderError) {
      console.error(`llm-server: error: ${e.message}`);
      return 1;
    }
    throw e;
  }

  // Listen at once so health checks see 503 while the weights load, as SGLang does.
  let handler: (req: Request, info: Deno.ServeHandlerInfo) => Promise<Response> = startingHandler;
  const server = Deno.serve({
    hostname: args.host,
    port: args.port,
    onListen: ({ hostname, port }) => log(`Listening on http://${hostname}:${port}`),
  }, (req, info) => handler(req, info));

  const libraryPath = Deno.env.get("LLM_ENGINE_LIB") || defaultLibraryPath();
  let engine: Engine;
  try {
    engine = await Engine.create(libraryPath, engineConfig(args));
  } catch (e) {
    console.error(`llm-server: error: cannot start the engine: ${(e as Error).message}`);
    await server.shutdown();
    return 1;
  }
  const info = engine.info();
  log(
    `max_total_num_tokens=${info.max_total_num_tokens}, chunked_prefill_size=${info.chunked_prefill_size}, ` +
      `max_prefill_tokens=${info.max_prefill_tokens}, max_running_requests=${info.max_running_requests}, context_len=${info.context_len}`,
  );
  const ctx: ServerContext = {
    args,
    engine,
    info,
    tokenizer,
    chatTemplate,
    metrics: new Metrics(),
    ready: false,
    live: new Map(),
  };
  handler = makeHandler(ctx);

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log(`Received ${signal}; shutting down.`);
    ctx.ready = false;
    try {
      engine.abortAll();
    } catch { /* already stopping */ }
    await server.shutdown();
    await engine.close();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
  Deno.addSignalListener("SIGINT", () => stop("SIGINT"));

  if (!args.skip_server_warmup) {
    const ok = await oneTokenGeneration(ctx, 600_000);
    if (!ok) {
      ctx.ready = false;
      console.error("llm-server: error: the warm-up generation failed; see the engine log above.");
      await server.shutdown();
      await engine.close();
      return 1;
    }
  }
  ctx.ready = true;
  log("The server is fired up and ready to roll!");
  await server.finished;
  return 0;
}

function startingHandler(_req: Request): Promise<Response> {
  const err = new ApiError(503, "The server is starting; the model is loading.");
  return Promise.resolve(Response.json(errorBody(err), { status: 503 }));
}

async function checkModelFolder(dir: string): Promise<void> {
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
}

if (import.meta.main) Deno.exit(await main());

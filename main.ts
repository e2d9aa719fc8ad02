/** llm-server: parse args → open the engine → warm up → Deno.serve(router) → drain on SIGTERM/SIGINT. */
import { runCliCommand } from "./server/cli/commands.ts";
import { ArgsError, engineConfig, helpText, parseServerArgs, ServerArgs } from "./server/args.ts";
import type { ServerContext } from "./server/context.ts";
import { Engine, EngineLike } from "./server/engine/client.ts";
import { defaultLibraryPath } from "./server/engine/ffi.ts";
import { ApiError, errorBody, ModelFolderError } from "./server/errors.ts";
import { log, setLogLevel } from "./server/log.ts";
import { Metrics } from "./server/metrics.ts";
import { loadGgufModel, resolveGgufFile } from "./server/gguf/model_source.ts";
import { loadModelConfig, ModelConfig } from "./server/model_config.ts";
import { oneTokenGeneration } from "./server/native/admin.ts";
import { makeHandler } from "./server/router.ts";
import { Shutdown } from "./server/shutdown.ts";
import { ChatTemplate } from "./server/text/chat_template.ts";
import { TextTokenizer } from "./server/text/tokenizer.ts";

/** Opens the engine for a parsed configuration; tests pass a fake one. */
export type EngineOpener = (config: Record<string, unknown>) => Promise<EngineLike>;

const openLibraryEngine: EngineOpener = (config) =>
  Engine.create(Deno.env.get("LLM_ENGINE_LIB") || defaultLibraryPath(), config);

/** Runs the server until a signal stops it; returns the exit code. */
export async function main(argv: string[], openEngine: EngineOpener = openLibraryEngine): Promise<number> {
  const t0 = performance.now();
  const seconds = (from: number) => ((performance.now() - from) / 1000).toFixed(2);
  // Subcommands (--version, install-service, ...) first: in the single-file build this also sets LLM_ENGINE_LIB.
  const cliExit = await runCliCommand(argv);
  if (cliExit !== null) return cliExit;
  let args: ServerArgs | null;
  try {
    args = parseServerArgs(argv, Deno.env.toObject());
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

  let modelConfig: ModelConfig;
  let tokenizer: TextTokenizer;
  let chatTemplate: ChatTemplate;
  try {
    const ggufFile = await resolveGgufFile(args.model_path, args.load_format);
    if (ggufFile !== null) {
      ({ modelConfig, tokenizer } = loadGgufModel(ggufFile));
    } else {
      modelConfig = await loadModelConfig(args.model_path);
      tokenizer = await TextTokenizer.load(args.model_path);
    }
    chatTemplate = await ChatTemplate.load(tokenizer, args.chat_template ?? undefined);
  } catch (e) {
    if (e instanceof ModelFolderError) {
      log(`llm-server: error: ${e.message}`, "error");
      return 1;
    }
    throw e;
  }

  // Listen at once so health checks see 503 while the weights load, as SGLang does.
  let handler: (req: Request, info: Deno.ServeHandlerInfo) => Promise<Response> = startingHandler;
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({
      hostname: args.host,
      port: args.port,
      onListen: ({ hostname, port }) => log(`Listening on http://${hostname}:${port}`),
    }, (req, info) => handler(req, info));
  } catch (e) {
    // Port in use, an address not on this host, no permission: one line, not a stack trace.
    log(`llm-server: error: cannot listen on ${args.host}:${args.port}: ${(e as Error).message}`, "error");
    return 1;
  }

  // Before the engine exists there is nothing to drain: a signal ends the process at once (the load may take
  // minutes). From then on the Shutdown drains; a signal during warm-up is handled after it.
  const stop = {
    signal: null as string | null,
    shutdown: null as Shutdown | null,
    done: null as Promise<void> | null,
  };
  let warmingUp = false;
  const onSignal = (signal: string) => {
    if (!stop.shutdown) {
      log(`Received ${signal} while loading the model; exiting.`);
      Deno.exit(0);
    }
    if (warmingUp && stop.signal === null) {
      log(`Received ${signal} during warm-up; stopping after it.`);
      stop.signal = signal;
      return;
    }
    stop.done = stop.shutdown.run(signal);
  };
  const listeners = (["SIGTERM", "SIGINT"] as const).map((s) => {
    const fn = () => onSignal(s);
    Deno.addSignalListener(s, fn);
    return [s, fn] as const;
  });
  const removeListeners = () => listeners.forEach(([s, fn]) => Deno.removeSignalListener(s, fn));

  const tLoad = performance.now();
  let engine: EngineLike;
  try {
    engine = await openEngine(engineConfig(args));
  } catch (e) {
    log(`llm-server: error: cannot start the engine: ${(e as Error).message}`, "error");
    await server.shutdown();
    removeListeners();
    return 1;
  }
  const info = engine.info();
  log(`Engine ready (weights loaded, KV pool allocated) in ${seconds(tLoad)} s.`);
  // The engine itself logs the pool sizing line (max_total_num_tokens=...), as SGLang's scheduler does.
  const ctx: ServerContext = {
    args,
    engine,
    info,
    tokenizer,
    chatTemplate,
    modelConfig,
    metrics: new Metrics(),
    ready: false,
    stopping: false,
    live: new Map(),
  };
  let markReady = () => {};
  ctx.whenReady = new Promise<void>((done) => markReady = done);
  handler = makeHandler(ctx);
  stop.shutdown = new Shutdown(ctx, server, args.shutdown_timeout * 1000);

  if (!args.skip_server_warmup) {
    const tWarm = performance.now();
    warmingUp = true;
    const ok = await oneTokenGeneration(ctx, 600_000);
    warmingUp = false;
    if (!ok && stop.signal === null) {
      log("llm-server: error: the warm-up generation failed; see the engine log above.", "error");
      await server.shutdown();
      await engine.close();
      removeListeners();
      return 1;
    }
    if (ok) log(`Warm-up generation done in ${seconds(tWarm)} s.`);
  }
  if (stop.signal !== null || stop.done !== null) {
    markReady(); // waiting requests see `ready` false and get their 503 now, not at the wait's end
    await (stop.done ?? stop.shutdown.run(stop.signal!));
    removeListeners();
    return 0;
  }
  ctx.ready = true;
  markReady();
  log(`Start-up took ${seconds(t0)} s.`);
  log("The server is fired up and ready to roll!");
  await server.finished;
  // server.finished also resolves when shutdown() closed it; wait for the engine to be freed too.
  if (stop.done) await stop.done;
  removeListeners();
  return 0;
}

function startingHandler(_req: Request): Promise<Response> {
  const err = new ApiError(503, "The server is starting; the model is loading.");
  return Promise.resolve(Response.json(errorBody(err), { status: 503 }));
}

if (import.meta.main) Deno.exit(await main(Deno.args));

import { parseArgs } from "node:util";

/** Server arguments, named and defaulted as SGLang's server_args. */
export interface ServerArgs {
  model_path: string;
  host: string;
  port: number;
  served_model_name: string;
  context_length: number | null;
  dtype: "auto" | "float32" | "bfloat16";
  load_format: "auto" | "dummy" | "gguf";
  chat_template: string | null;
  random_seed: number;
  log_level: "debug" | "info" | "warning" | "error";
  max_total_tokens: number | null;
  mem_fraction_static: number | null;
  page_size: number;
  max_running_requests: number | null;
  max_prefill_tokens: number;
  chunked_prefill_size: number;
  schedule_policy: "fcfs" | "lpm";
  disable_radix_cache: boolean;
  decode_log_interval: number;
  threads: number | null;
  tp_size: number;
  tp_comm: "threads" | "nccl";
  api_key: string | null;
  enable_cache_report: boolean;
  enable_metrics: boolean;
  max_queued_requests: number | null;
  stream_response_default_include_usage: boolean;
  log_requests: boolean;
  skip_server_warmup: boolean;
  stream_interval: number;
  shutdown_timeout: number;
  default_max_tokens: number;
  max_body_bytes: number;
  device: "auto" | "cpu" | "cuda";
  cuda_graph_max_bs: number | null;
  disable_cuda_graph: boolean;
  watchdog_timeout: number;
}

/** A usage error: main.ts prints the one line and exits 2. */
export class ArgsError extends Error {}

type Kind = "string" | "int" | "float" | "bool";
interface Spec {
  kind: Kind;
  help: string;
  choices?: string[];
  min?: number;
}

const SPECS: Record<string, Spec> = {
  "model-path": {
    kind: "string",
    help: "HF model folder (config.json, *.safetensors, tokenizer.json), a .gguf file, or a folder holding one " +
      "[required; scripts/llm-server serves the default SmolLM2 GGUF without it]",
  },
  "host": { kind: "string", help: "address to listen on (127.0.0.1)" },
  "port": { kind: "int", help: "port to listen on (30000)", min: 0 },
  "served-model-name": { kind: "string", help: "model name in the API (default: --model-path)" },
  "context-length": { kind: "int", help: "context length (default: from config.json)", min: 1 },
  "dtype": { kind: "string", help: "compute dtype", choices: ["auto", "float32", "bfloat16"] },
  "load-format": {
    kind: "string",
    help: "auto: read weights (safetensors or GGUF); gguf: the path is GGUF; dummy: random weights",
    choices: ["auto", "dummy", "gguf"],
  },
  "chat-template": { kind: "string", help: "Jinja chat template file overriding tokenizer_config.json's" },
  "random-seed": { kind: "int", help: "random seed (0)" },
  "log-level": { kind: "string", help: "log level", choices: ["debug", "info", "warning", "error"] },
  "max-total-tokens": { kind: "int", help: "KV pool size in tokens (default: from memory)", min: 1 },
  "mem-fraction-static": { kind: "float", help: "fraction of memory for weights and KV pool", min: 0 },
  "page-size": { kind: "int", help: "KV page size in tokens (1)", min: 1 },
  "max-running-requests": { kind: "int", help: "most requests decoding at once", min: 1 },
  "max-prefill-tokens": { kind: "int", help: "most tokens in one prefill batch (16384)", min: 1 },
  "chunked-prefill-size": { kind: "int", help: "prefill chunk size (8192; -1 disables)", min: -1 },
  "schedule-policy": { kind: "string", help: "scheduling policy", choices: ["fcfs", "lpm"] },
  "disable-radix-cache": { kind: "bool", help: "turn the prefix cache off" },
  "decode-log-interval": { kind: "int", help: "decode steps between decode log lines (40)", min: 1 },
  "threads": { kind: "int", help: "compute threads (default: all cores)", min: 1 },
  "tp-size": { kind: "int", help: "tensor-parallel ranks the model is split over (1)", min: 1 },
  "tensor-parallel-size": { kind: "int", help: "alias of --tp-size", min: 1 },
  "tp-comm": {
    kind: "string",
    help: "how tensor-parallel ranks exchange sums: threads (shared memory) or nccl (GPUs, cuda builds)",
    choices: ["threads", "nccl"],
  },
  "api-key": { kind: "string", help: "require Authorization: Bearer KEY (also env LLM_SERVER_API_KEY)" },
  "enable-cache-report": { kind: "bool", help: "report usage.prompt_tokens_details.cached_tokens" },
  "enable-metrics": { kind: "bool", help: "serve Prometheus metrics at /metrics" },
  "max-queued-requests": { kind: "int", help: "refuse requests with 503 beyond this many waiting", min: 0 },
  "stream-response-default-include-usage": {
    kind: "bool",
    help: "streams end with a usage chunk by default",
  },
  "log-requests": { kind: "bool", help: "log each request's body and result" },
  "skip-server-warmup": { kind: "bool", help: "skip the warm-up generation at start" },
  "stream-interval": { kind: "int", help: "tokens between stream chunks (1)", min: 1 },
  "shutdown-timeout": {
    kind: "float",
    help: "seconds running requests get to finish on SIGTERM/SIGINT before they are aborted (30)",
    min: 0,
  },
  "default-max-tokens": {
    kind: "int",
    help: "output bound for OpenAI requests without max_tokens (4096; -1: until the context ends)",
    min: -1,
  },
  "device": {
    kind: "string",
    help: "where the model runs (auto: the GPU when CUDA works, else the CPU)",
    choices: ["auto", "cpu", "cuda"],
  },
  "cuda-graph-max-bs": { kind: "int", help: "largest decode batch run as a CUDA graph (160)", min: 1 },
  "disable-cuda-graph": { kind: "bool", help: "run every decode step eagerly on the GPU" },
  "watchdog-timeout": {
    kind: "float",
    help: "seconds a scheduler step may run before /health reports 503 and the batch is logged (300; 0: off)",
    min: 0,
  },
  "max-body-bytes": {
    kind: "int",
    help: "largest request body accepted; larger ones get 413 (16777216)",
    min: 1024,
  },
  "help": { kind: "bool", help: "show this help and exit" },
};

export function helpText(): string {
  const lines = ["Usage: llm-server --model-path DIR [options]", "", "Options:"];
  for (const [name, spec] of Object.entries(SPECS)) {
    const value = spec.kind === "bool" ? "" : spec.choices ? ` {${spec.choices.join(",")}}` : " VALUE";
    lines.push(`  --${name}${value}`.padEnd(52) + spec.help);
  }
  return lines.join("\n");
}

/** Returns null when --help was asked for. */
export function parseServerArgs(
  argv: string[],
  env: Record<string, string | undefined> = {},
): ServerArgs | null {
  const options: Record<string, { type: "string" | "boolean" }> = {};
  for (const [name, spec] of Object.entries(SPECS)) {
    options[name] = { type: spec.kind === "bool" ? "boolean" : "string" };
  }
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: joinNegativeValues(argv),
      options,
      strict: true,
      allowPositionals: false,
    }) as any);
  } catch (e) {
    throw new ArgsError((e as Error).message.split("\n")[0]);
  }
  if (values.help) return null;
  const get = (name: string): any => convert(name, values[name]);
  const modelPath = get("model-path");
  if (!modelPath) throw new ArgsError("the following arguments are required: --model-path");
  const defaults = {
    host: "127.0.0.1",
    port: 30000,
    dtype: "auto",
    "load-format": "auto",
    "random-seed": 0,
    "log-level": "info",
    "page-size": 1,
    "max-prefill-tokens": 16384,
    "chunked-prefill-size": 8192,
    "schedule-policy": "fcfs",
    "decode-log-interval": 40,
    "stream-interval": 1,
    "shutdown-timeout": 30,
    "default-max-tokens": 4096,
    device: "auto",
    "max-body-bytes": 16 << 20,
    "watchdog-timeout": 300,
  } as Record<string, unknown>;
  const pick = (name: string): any => get(name) ?? defaults[name] ?? null;
  const port = pick("port");
  if (port > 65535) throw new ArgsError(`argument --port: invalid port ${port}`);
  const chunked = pick("chunked-prefill-size");
  if (chunked === 0) throw new ArgsError("argument --chunked-prefill-size: must be positive or -1");
  const memFraction = get("mem-fraction-static");
  if (memFraction !== undefined && (memFraction <= 0 || memFraction > 1)) {
    throw new ArgsError(`argument --mem-fraction-static: must be in (0, 1], got ${memFraction}`);
  }
  const model = modelPath.replace(/\/+$/, "") || "/";
  return {
    model_path: model,
    host: pick("host"),
    port,
    served_model_name: get("served-model-name") ?? model,
    context_length: pick("context-length"),
    dtype: pick("dtype"),
    load_format: pick("load-format"),
    chat_template: pick("chat-template"),
    random_seed: pick("random-seed"),
    log_level: pick("log-level"),
    max_total_tokens: pick("max-total-tokens"),
    mem_fraction_static: memFraction ?? null,
    page_size: pick("page-size"),
    max_running_requests: pick("max-running-requests"),
    max_prefill_tokens: pick("max-prefill-tokens"),
    chunked_prefill_size: chunked,
    schedule_policy: pick("schedule-policy"),
    disable_radix_cache: values["disable-radix-cache"] === true,
    decode_log_interval: pick("decode-log-interval"),
    threads: pick("threads"),
    tp_size: get("tp-size") ?? get("tensor-parallel-size") ?? 1,
    tp_comm: get("tp-comm") ?? "threads",
    api_key: get("api-key") ?? env.LLM_SERVER_API_KEY ?? null,
    enable_cache_report: values["enable-cache-report"] === true,
    enable_metrics: values["enable-metrics"] === true,
    max_queued_requests: pick("max-queued-requests"),
    stream_response_default_include_usage: values["stream-response-default-include-usage"] === true,
    log_requests: values["log-requests"] === true,
    skip_server_warmup: values["skip-server-warmup"] === true,
    stream_interval: pick("stream-interval"),
    shutdown_timeout: pick("shutdown-timeout"),
    default_max_tokens: pick("default-max-tokens"),
    device: pick("device"),
    cuda_graph_max_bs: pick("cuda-graph-max-bs"),
    disable_cuda_graph: values["disable-cuda-graph"] === true,
    max_body_bytes: pick("max-body-bytes"),
    watchdog_timeout: pick("watchdog-timeout"),
  };
}

/** node:util refuses `--flag -1` as ambiguous; SGLang users write it that way, so bind it as `--flag=-1`. */
function joinNegativeValues(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i].startsWith("--") ? argv[i].slice(2) : "";
    const spec = SPECS[name];
    if (spec && spec.kind !== "bool" && /^-\d/.test(argv[i + 1] ?? "")) {
      out.push(`${argv[i]}=${argv[++i]}`);
    } else out.push(argv[i]);
  }
  return out;
}

function convert(name: string, raw: string | boolean | undefined): unknown {
  const spec = SPECS[name];
  if (raw === undefined || spec.kind === "bool") return raw;
  const text = String(raw);
  if (spec.choices && !spec.choices.includes(text)) {
    throw new ArgsError(
      `argument --${name}: invalid choice: '${text}' (choose from ${spec.choices.join(", ")})`,
    );
  }
  if (spec.kind === "int") {
    if (!/^-?\d+$/.test(text.trim())) throw new ArgsError(`argument --${name}: invalid int value: '${text}'`);
    const n = Number(text);
    if (spec.min !== undefined && n < spec.min) {
      throw new ArgsError(`argument --${name}: must be >= ${spec.min}, got ${n}`);
    }
    return n;
  }
  if (spec.kind === "float") {
    const n = Number(text);
    if (text.trim() === "" || !Number.isFinite(n)) {
      throw new ArgsError(`argument --${name}: invalid float value: '${text}'`);
    }
    if (spec.min !== undefined && n < spec.min) {
      throw new ArgsError(`argument --${name}: must be >= ${spec.min}, got ${n}`);
    }
    return n;
  }
  return text;
}

/** The engine's config JSON (engine.h, llm_engine_create). */
export function engineConfig(args: ServerArgs): Record<string, unknown> {
  return {
    model_path: args.model_path,
    load_format: args.load_format,
    dtype: args.dtype,
    context_length: args.context_length,
    max_total_tokens: args.max_total_tokens,
    mem_fraction_static: args.mem_fraction_static,
    page_size: args.page_size,
    max_running_requests: args.max_running_requests,
    max_prefill_tokens: args.max_prefill_tokens,
    chunked_prefill_size: args.chunked_prefill_size,
    schedule_policy: args.schedule_policy,
    disable_radix_cache: args.disable_radix_cache,
    random_seed: args.random_seed,
    threads: args.threads,
    tp_size: args.tp_size,
    tp_comm: args.tp_comm,
    decode_log_interval: args.decode_log_interval,
    log_level: args.log_level,
    device: args.device,
    // Absent keys take the engine's defaults (engine.h).
    ...(args.cuda_graph_max_bs !== null ? { cuda_graph_max_bs: args.cuda_graph_max_bs } : {}),
    disable_cuda_graph: args.disable_cuda_graph,
    watchdog_timeout: args.watchdog_timeout,
  };
}

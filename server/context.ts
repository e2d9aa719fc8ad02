import type { ServerArgs } from "./args.ts";
import type { EngineInfo, EngineLike } from "./engine/client.ts";
import type { ChatTemplate } from "./text/chat_template.ts";
import type { TextTokenizer } from "./text/tokenizer.ts";
import type { Metrics } from "./metrics.ts";
import type { LiveRequest } from "./generation.ts";
import type { ModelConfig } from "./model_config.ts";

/** Everything a handler needs, built once in main.ts (or by a test around a fake engine). */
export interface ServerContext {
  args: ServerArgs;
  engine: EngineLike;
  info: EngineInfo;
  tokenizer: TextTokenizer;
  chatTemplate: ChatTemplate;
  metrics: Metrics;
  /** What /model_info reports from config.json. */
  modelConfig: ModelConfig;
  /** False until the warm-up generation finished; health answers 503 meanwhile. */
  ready: boolean;
  /** Settles when start-up ends, ready or stopping (main.ts); generation requests that arrive during the warm-up wait for it. */
  whenReady?: Promise<void>;
  /** Set by SIGTERM/SIGINT: new requests get 503 while the running ones finish. */
  stopping: boolean;
  /** Requests accepted and not yet finished, by rid, so /abort_request, /get_load and shutdown can find them. */
  live: Map<string, LiveRequest>;
}

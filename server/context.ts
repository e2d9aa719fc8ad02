import type { ServerArgs } from "./args.ts";
import type { EngineInfo, EngineLike } from "./engine/client.ts";
import type { ChatTemplate } from "./text/chat_template.ts";
import type { TextTokenizer } from "./text/tokenizer.ts";
import type { Metrics } from "./metrics.ts";

/** Everything a handler needs, built once in main.ts (or by a test around a fake engine). */
export interface ServerContext {
  args: ServerArgs;
  engine: EngineLike;
  info: EngineInfo;
  tokenizer: TextTokenizer;
  chatTemplate: ChatTemplate;
  metrics: Metrics;
  /** False until the warm-up generation finished; health answers 503 meanwhile. */
  ready: boolean;
  /** Requests accepted and not yet finished, by rid, so /abort_request can find them. */
  live: Map<string, { abort: () => void }>;
}

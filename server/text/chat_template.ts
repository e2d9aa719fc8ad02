import { Template } from "@huggingface/jinja";
import { ApiError, ModelFolderError } from "../errors.ts";
import type { TextTokenizer } from "./tokenizer.ts";

export interface ChatMessage {
  role: string;
  content: unknown;
  [key: string]: unknown;
}

/** Renders chat messages the way transformers' apply_chat_template does. */
export class ChatTemplate {
  private constructor(
    private readonly template: Template | null,
    private readonly tokenizer: TextTokenizer,
  ) {}

  static async load(tokenizer: TextTokenizer, overrideFile?: string): Promise<ChatTemplate> {
    let source: string | null = null;
    if (overrideFile) {
      try {
        source = await Deno.readTextFile(overrideFile);
      } catch (e) {
        throw new ModelFolderError(`cannot read --chat-template ${overrideFile}: ${(e as Error).message}`);
      }
    } else {
      source = pickTemplate(tokenizer.config.chat_template);
    }
    if (source === null) return new ChatTemplate(null, tokenizer);
    try {
      return new ChatTemplate(new Template(source), tokenizer);
    } catch (e) {
      throw new ModelFolderError(`the chat template does not parse: ${(e as Error).message}`);
    }
  }

  get available(): boolean {
    return this.template !== null;
  }

  render(messages: ChatMessage[], options: { addGenerationPrompt?: boolean; tools?: unknown } = {}): string {
    if (!this.template) {
      throw new ApiError(
        400,
        "This model has no chat template (tokenizer_config.json has no chat_template); " +
          "use /generate or /v1/completions, or start the server with --chat-template FILE.",
      );
    }
    const cfg = this.tokenizer.config;
    const context: Record<string, unknown> = {
      messages: messages.map(normalizeContent),
      add_generation_prompt: options.addGenerationPrompt ?? true,
      bos_token: this.tokenizer.bosToken ?? "",
      eos_token: this.tokenizer.eosToken ?? "",
      unk_token: specialName(cfg.unk_token),
      pad_token: specialName(cfg.pad_token),
    };
    if (options.tools !== undefined && options.tools !== null) context.tools = options.tools;
    try {
      return this.template.render(context);
    } catch (e) {
      throw new ApiError(400, `The chat template failed on these messages: ${(e as Error).message}`);
    }
  }

  /** Token ids of a rendered chat; the template supplies BOS itself, so the post-processor must not add another. */
  encode(
    messages: ChatMessage[],
    options: { addGenerationPrompt?: boolean; tools?: unknown } = {},
  ): number[] {
    return this.tokenizer.encode(this.render(messages, options), false);
  }
}

function pickTemplate(value: unknown): string | null {
  if (typeof value === "string") return value;
  if (Array.isArray(value)) {
    const named = value.find((t) => t?.name === "default") ?? value[0];
    return typeof named?.template === "string" ? named.template : null;
  }
  return null;
}

function specialName(value: unknown): string {
  if (typeof value === "string") return value;
  if (value && typeof value === "object" && typeof (value as any).content === "string") {
    return (value as any).content;
  }
  return "";
}

/** OpenAI content parts [{type:"text",text}] collapse to a string, as SGLang does for text-only models. */
function normalizeContent(m: ChatMessage): ChatMessage {
  if (!Array.isArray(m.content)) return { ...m, content: m.content ?? "" };
  const text = m.content
    .map((part: any) => {
      if (part?.type === "text" && typeof part.text === "string") return part.text;
      throw new ApiError(
        400,
        `Unsupported content part type: ${JSON.stringify(part?.type)}`,
        "BadRequestError",
        "messages",
      );
    })
    .join("");
  return { ...m, content: text };
}

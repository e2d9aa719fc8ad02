import type { ServerContext } from "../context.ts";
import { badRequest } from "../errors.ts";
import {
  checkSequenceCount,
  generate,
  Generation,
  GenerationUpdate,
  mergeGenerations,
  newRequestId,
  warmPrefixCache,
} from "../generation.ts";
import { sseResponse } from "../sse.ts";
import type { ChatMessage } from "../text/chat_template.ts";
import { siblingSampling } from "../sampling.ts";
import {
  chatLogprobEntry,
  finishReasonName,
  matchedStop,
  optionalBool,
  optionalInt,
  parseCommon,
  rejectUnsupportedOptions,
  requireObject,
  unixNow,
  usageOf,
} from "./protocol.ts";

interface ChatRequest {
  messages: ChatMessage[];
  tools: unknown;
  logprobs: boolean;
  topLogprobs: number;
  rid: string;
}

/** OpenAI's shapes: tools are {type: "function", function: {name, ...}}; tool_choice a mode or one named tool. */
function checkTools(tools: unknown, toolChoice: unknown): void {
  const isObject = (v: unknown): v is Record<string, any> =>
    v !== null && typeof v === "object" && !Array.isArray(v);
  if (tools !== undefined && tools !== null) {
    if (!Array.isArray(tools)) throw badRequest("tools must be a list of tool objects", "tools");
    tools.forEach((t, i) => {
      if (
        !isObject(t) || t.type !== "function" || !isObject(t.function) || typeof t.function.name !== "string"
      ) {
        throw badRequest(`tools[${i}] must be {type: "function", function: {name: string, ...}}`, "tools");
      }
    });
  }
  if (toolChoice === undefined || toolChoice === null) return;
  if (typeof toolChoice === "string" && ["none", "auto", "required"].includes(toolChoice)) return;
  if (
    isObject(toolChoice) && toolChoice.type === "function" && isObject(toolChoice.function) &&
    typeof toolChoice.function.name === "string"
  ) return;
  throw badRequest(
    'tool_choice must be "none", "auto", "required" or {type: "function", function: {name}}',
    "tool_choice",
  );
}

function parseChat(body: Record<string, unknown>): ChatRequest {
  const messages = body.messages;
  if (!Array.isArray(messages) || messages.length === 0) {
    throw badRequest("messages must be a non-empty list", "messages");
  }
  messages.forEach((m, i) => {
    if (m === null || typeof m !== "object" || Array.isArray(m)) {
      throw badRequest(`messages[${i}] must be an object`, "messages");
    }
    if (typeof m.role !== "string") throw badRequest(`messages[${i}].role must be a string`, "messages");
    const c = m.content;
    if (c !== undefined && c !== null && typeof c !== "string" && !Array.isArray(c)) {
      throw badRequest(`messages[${i}].content must be a string or a list of content parts`, "messages");
    }
  });
  const logprobs = optionalBool(body, "logprobs") ?? false;
  const topLogprobs = optionalInt(body, "top_logprobs", 0, 20) ?? 0;
  if (topLogprobs > 0 && !logprobs) {
    throw badRequest("top_logprobs requires logprobs to be true", "top_logprobs");
  }
  if (body.rid !== undefined && typeof body.rid !== "string") throw badRequest("rid must be a string", "rid");
  checkTools(body.tools, body.tool_choice);
  return {
    messages: messages as ChatMessage[],
    tools: body.tools,
    logprobs,
    topLogprobs,
    rid: (body.rid as string | undefined) ?? newRequestId(),
  };
}

export async function handleChat(
  ctx: ServerContext,
  rawBody: unknown,
  signal: AbortSignal,
): Promise<Response> {
  const body = requireObject(rawBody);
  const common = parseCommon(ctx, body, ["max_tokens", "max_completion_tokens"]);
  rejectUnsupportedOptions(body);
  const chat = parseChat(body);
  const inputIds = ctx.chatTemplate.encode(chat.messages, { addGenerationPrompt: true, tools: chat.tools });
  const n = common.sampling.n;
  checkSequenceCount(1, n);
  await warmPrefixCache(ctx, [inputIds], n);
  const start = (i: number): Generation =>
    generate(ctx, {
      inputIds,
      sampling: siblingSampling(common.sampling, i),
      rid: n === 1 ? chat.rid : `${chat.rid}_${i}`,
      returnLogprob: chat.logprobs,
      topLogprobsNum: chat.topLogprobs,
      signal,
    });
  const id = chat.rid;
  const created = unixNow();
  if (!common.stream) {
    const gens: Generation[] = [];
    try {
      for (let i = 0; i < n; i++) gens.push(start(i));
      const finals = await Promise.all(gens.map((g) => lastOf(g)));
      return Response.json({
        id,
        object: "chat.completion",
        created,
        model: common.model,
        choices: finals.map((u, index) => ({
          index,
          message: { role: "assistant", content: u.text, reasoning_content: null, tool_calls: null },
          logprobs: chat.logprobs ? { content: logprobEntries(ctx, u, 0, u.outputLogprobs.length) } : null,
          finish_reason: finishReasonName(u.finish!),
          matched_stop: matchedStop(u.finish!),
        })),
        usage: usageOf(ctx, finals, n),
      });
    } finally {
      for (const g of gens) g.cancel();
    }
  }
  const gens: Generation[] = [];
  try {
    for (let i = 0; i < n; i++) gens.push(start(i));
  } catch (e) {
    for (const g of gens) g.cancel();
    throw e;
  }
  const chunk = (choices: unknown[], usage?: unknown) => ({
    id,
    object: "chat.completion.chunk",
    created,
    model: common.model,
    choices,
    ...(usage !== undefined ? { usage } : {}),
  });
  async function* payloads() {
    const latest: GenerationUpdate[] = [];
    const usageNow = () => usageOf(ctx, latest.filter(Boolean), 1);
    for (let i = 0; i < n; i++) {
      yield chunk([{
        index: i,
        delta: { role: "assistant", content: "" },
        logprobs: null,
        finish_reason: null,
      }]);
    }
    let logprobsSent = new Array(n).fill(0);
    for await (const { index, update } of mergeGenerations(gens)) {
      latest[index] = update;
      const extra = common.continuousUsage ? usageNow() : undefined;
      const newLogprobs = chat.logprobs
        ? logprobEntries(ctx, update, logprobsSent[index], update.outputLogprobs.length)
        : [];
      logprobsSent[index] = update.outputLogprobs.length;
      if (update.delta.length > 0 || newLogprobs.length > 0) {
        yield chunk([{
          index,
          delta: { content: update.delta },
          logprobs: chat.logprobs ? { content: newLogprobs } : null,
          finish_reason: null,
        }], extra);
      }
      if (update.finish) {
        yield chunk([{
          index,
          delta: {},
          logprobs: null,
          finish_reason: finishReasonName(update.finish),
          matched_stop: matchedStop(update.finish),
        }], extra);
      }
    }
    logprobsSent = [];
    if (common.includeUsage && latest.length > 0) yield chunk([], usageOf(ctx, latest, n));
  }
  return sseResponse(payloads());
}

export async function lastOf(g: Generation): Promise<GenerationUpdate> {
  let last: GenerationUpdate | null = null;
  for await (const u of g) last = u;
  if (!last) throw badRequest("The request was cancelled.");
  return last;
}

function logprobEntries(ctx: ServerContext, u: GenerationUpdate, from: number, to: number) {
  const out = [];
  for (let i = from; i < to; i++) {
    out.push(chatLogprobEntry(ctx, u.outputIds[i], u.outputLogprobs[i], u.outputTopLogprobs[i]));
  }
  return out;
}

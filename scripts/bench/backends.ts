// Streaming clients for the server's generation endpoints; each returns one request's timings.

import type { BenchRequest } from "./datasets.ts";

export type BackendName = "sglang" | "sglang-oai";

export interface RequestOutcome {
  success: boolean;
  error: string;
  promptLen: number;
  outputLen: number;
  /** Seconds from send to the first chunk that carried output. */
  ttft: number;
  /** Seconds between consecutive output-carrying chunks. */
  itl: number[];
  latency: number;
}

export interface BackendOptions {
  baseUrl: string;
  backend: BackendName;
  model?: string;
  extraSamplingParams?: Record<string, unknown>;
}

/** Yields each `data:` payload of a server-sent-event stream. */
async function* sseEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const bytes of body) {
    buffer += decoder.decode(bytes, { stream: true });
    let boundary: number;
    while ((boundary = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, boundary);
      buffer = buffer.slice(boundary + 2);
      for (const line of event.split("\n")) {
        if (line.startsWith("data:")) yield line.slice(5).trim();
      }
    }
  }
  buffer += decoder.decode();
  for (const line of buffer.split("\n")) {
    if (line.startsWith("data:")) yield line.slice(5).trim();
  }
}

function requestBody(options: BackendOptions, request: BenchRequest): { path: string; body: unknown } {
  if (options.backend === "sglang") {
    return {
      path: "/generate",
      body: {
        input_ids: request.promptIds,
        stream: true,
        sampling_params: {
          max_new_tokens: request.outputLen,
          temperature: 0,
          ignore_eos: true,
          ...options.extraSamplingParams,
        },
      },
    };
  }
  return {
    path: "/v1/completions",
    body: {
      model: options.model ?? "default",
      prompt: request.promptIds,
      max_tokens: request.outputLen,
      temperature: 0,
      ignore_eos: true,
      stream: true,
      stream_options: { include_usage: true },
      ...options.extraSamplingParams,
    },
  };
}

/**
 * Token progress carried by one event, or -1 when the event says nothing about it. /generate reports the
 * running completion_tokens; /v1/completions chunks carry a text delta (one chunk per stream step) and a
 * final usage chunk.
 */
interface ChunkProgress {
  hasOutput: boolean;
  completionTokens: number;
  error?: string;
}

function readChunk(backend: BackendName, payload: any, previousTextLength: { value: number }): ChunkProgress {
  if (payload?.error) return { hasOutput: false, completionTokens: -1, error: JSON.stringify(payload.error) };
  if (backend === "sglang") {
    const text: string = payload.text ?? "";
    const tokens: number = payload.meta_info?.completion_tokens ?? payload.output_ids?.length ?? -1;
    const grew = text.length > previousTextLength.value;
    previousTextLength.value = Math.max(previousTextLength.value, text.length);
    return { hasOutput: grew || tokens > 0, completionTokens: tokens };
  }
  const usageTokens: number = payload.usage?.completion_tokens ?? -1;
  const choice = payload.choices?.[0];
  const hasOutput = choice !== undefined && typeof choice.text === "string" && choice.text.length > 0;
  return { hasOutput, completionTokens: usageTokens };
}

export async function sendRequest(options: BackendOptions, request: BenchRequest): Promise<RequestOutcome> {
  const outcome: RequestOutcome = {
    success: false,
    error: "",
    promptLen: request.promptIds.length,
    outputLen: 0,
    ttft: 0,
    itl: [],
    latency: 0,
  };
  const { path, body } = requestBody(options, request);
  const start = performance.now();
  let lastOutputAt = 0;
  let outputChunks = 0;
  let reportedTokens = -1;
  let lastReported = -1;
  const textLength = { value: 0 };
  try {
    const response = await fetch(options.baseUrl + path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!response.ok || !response.body) {
      outcome.error = `HTTP ${response.status}: ${(await response.text()).slice(0, 300)}`;
      return outcome;
    }
    let sawDone = false;
    for await (const data of sseEvents(response.body)) {
      if (data === "[DONE]") {
        sawDone = true;
        continue;
      }
      const now = performance.now();
      const progress = readChunk(options.backend, JSON.parse(data), textLength);
      if (progress.error) {
        outcome.error = progress.error;
        return outcome;
      }
      if (progress.completionTokens >= 0) reportedTokens = progress.completionTokens;
      // /generate may repeat the last state in its finish event; only progress counts as a chunk.
      const advanced = options.backend === "sglang"
        ? progress.hasOutput && (progress.completionTokens < 0 || progress.completionTokens > lastReported)
        : progress.hasOutput;
      if (progress.completionTokens >= 0) lastReported = Math.max(lastReported, progress.completionTokens);
      if (!advanced) continue;
      if (outputChunks === 0) outcome.ttft = (now - start) / 1000;
      else outcome.itl.push((now - lastOutputAt) / 1000);
      lastOutputAt = now;
      outputChunks++;
    }
    outcome.latency = (performance.now() - start) / 1000;
    if (!sawDone) {
      outcome.error = "stream ended without [DONE]";
      return outcome;
    }
    outcome.outputLen = reportedTokens >= 0 ? reportedTokens : outputChunks;
    outcome.success = outputChunks > 0;
    if (!outcome.success) outcome.error = "stream carried no output";
  } catch (error) {
    outcome.error = error instanceof Error ? error.message : String(error);
  }
  return outcome;
}

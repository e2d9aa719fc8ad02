// Streaming clients for the server's generation endpoints; each returns one request's timings.

import type { BenchRequest } from "./datasets.ts";
import { postStreaming } from "./http1.ts";

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

const NEWLINE = 10;

/** Offset of the first blank line ("\n\n") at or after `from`, or -1. */
function blankLine(bytes: Uint8Array, from: number): number {
  for (let i = bytes.indexOf(NEWLINE, from); i >= 0; i = bytes.indexOf(NEWLINE, i + 1)) {
    if (bytes[i + 1] === NEWLINE) return i;
  }
  return -1;
}

/** Calls `onData` with each `data:` payload of one event's text. */
function eventData(event: string, onData: (data: string) => void): void {
  // Servers send one `data: ...` line per event; other shapes take the general path.
  if (event.startsWith("data: ") && event.indexOf("\n") < 0) {
    onData(event.slice(6).trim());
    return;
  }
  for (const line of event.split("\n")) {
    if (line.startsWith("data:")) onData(line.slice(5).trim());
  }
}

/**
 * Cuts a server-sent-event byte stream into events at blank lines and hands each `data:` payload to
 * `onData` synchronously: each event is decoded once and costs no promise (the client shares the server's
 * cores, so its cost per token is part of what the benchmark measures). push() may be given a view of a
 * buffer that is reused afterwards: what it keeps, it copies.
 */
class SseReader {
  private readonly decoder = new TextDecoder();
  private carry: Uint8Array | null = null;

  constructor(private readonly onData: (data: string) => void) {}

  push(chunk: Uint8Array): void {
    let bytes = chunk;
    if (this.carry) {
      bytes = new Uint8Array(this.carry.length + chunk.length);
      bytes.set(this.carry);
      bytes.set(chunk, this.carry.length);
      this.carry = null;
    }
    let start = 0;
    for (let end = blankLine(bytes, 0); end >= 0; end = blankLine(bytes, start)) {
      eventData(this.decoder.decode(bytes.subarray(start, end)), this.onData);
      start = end + 2;
    }
    if (start < bytes.length) this.carry = bytes.slice(start);
  }

  end(): void {
    if (this.carry) eventData(this.decoder.decode(this.carry), this.onData);
    this.carry = null;
  }
}

/**
 * POSTs the request and feeds its SSE payloads to `onData`. Plain http goes through the raw HTTP/1.1 client
 * (one op per socket read); anything else through fetch. Returns an error text for a non-2xx answer.
 */
async function streamRequest(
  url: string,
  body: unknown,
  onData: (data: string) => void,
): Promise<string | null> {
  const reader = new SseReader(onData);
  const target = new URL(url);
  if (target.protocol === "http:") {
    const response = await postStreaming(target, JSON.stringify(body), (bytes) => reader.push(bytes));
    if (response.status < 200 || response.status >= 300) {
      return `HTTP ${response.status}: ${response.errorBody.slice(0, 300)}`;
    }
    reader.end();
    return null;
  }
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok || !response.body) {
    return `HTTP ${response.status}: ${(await response.text()).slice(0, 300)}`;
  }
  for await (const chunk of response.body) reader.push(chunk);
  reader.end();
  return null;
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

const COMPLETION_TOKENS = '"completion_tokens":';

/**
 * /generate's running completion_tokens read straight from the event text, or -1 when it cannot be read
 * that way. Each /generate event repeats the whole output so far (SGLang's format), so parsing every one
 * would make the client's cost grow with the output length; only the last event is parsed in full.
 */
function completionTokensOf(data: string): number {
  // An error payload, or text that mentions the key, takes the full parse.
  if (data.indexOf('"error"') >= 0) return -1;
  const at = data.lastIndexOf(COMPLETION_TOKENS);
  if (at < 0 || data.indexOf(COMPLETION_TOKENS) !== at) return -1;
  const value = parseInt(data.slice(at + COMPLETION_TOKENS.length, at + COMPLETION_TOKENS.length + 24), 10);
  return Number.isInteger(value) && value >= 0 ? value : -1;
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
    let sawDone = false;
    let lastData = "";
    let failed = false;
    const onProgress = (progress: ChunkProgress, now: number) => {
      if (progress.completionTokens >= 0) reportedTokens = progress.completionTokens;
      // /generate may repeat the last state in its finish event; only progress counts as a chunk.
      const advanced = options.backend === "sglang"
        ? progress.hasOutput && (progress.completionTokens < 0 || progress.completionTokens > lastReported)
        : progress.hasOutput;
      if (progress.completionTokens >= 0) lastReported = Math.max(lastReported, progress.completionTokens);
      if (!advanced) return;
      if (outputChunks === 0) outcome.ttft = (now - start) / 1000;
      else outcome.itl.push((now - lastOutputAt) / 1000);
      lastOutputAt = now;
      outputChunks++;
    };
    const refused = await streamRequest(options.baseUrl + path, body, (data) => {
      if (failed) return;
      if (data === "[DONE]") {
        sawDone = true;
        return;
      }
      const now = performance.now();
      const tokens = options.backend === "sglang" ? completionTokensOf(data) : -1;
      if (tokens >= 0) {
        lastData = data;
        onProgress({ hasOutput: tokens > 0, completionTokens: tokens }, now);
        return;
      }
      lastData = "";
      const progress = readChunk(options.backend, JSON.parse(data), textLength);
      if (progress.error) {
        outcome.error = progress.error;
        failed = true;
        return;
      }
      onProgress(progress, now);
    });
    if (refused !== null) {
      outcome.error = refused;
      return outcome;
    }
    if (failed) return outcome;
    // The tokens counted are the ones the stream delivered: /generate's last event carries every output id.
    if (lastData) {
      const last = JSON.parse(lastData);
      if (Array.isArray(last.output_ids)) {
        if (last.output_ids.length !== reportedTokens) {
          outcome.error =
            `last event: ${last.output_ids.length} output_ids but completion_tokens ${reportedTokens}`;
          return outcome;
        }
        reportedTokens = last.output_ids.length;
      }
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

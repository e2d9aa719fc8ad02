import type { ServerContext } from "./context.ts";
import { ApiError, badRequest, errorBody } from "./errors.ts";
import { engineToApi } from "./generation.ts";
import { log } from "./log.ts";
import {
  handleAbortRequest,
  handleDetokenize,
  handleFlushCache,
  handleHealth,
  handleLoad,
  handleMetrics,
  handleModel,
  handleModelInfo,
  handleModels,
  handleServerInfo,
  handleTokenize,
} from "./native/admin.ts";
import { handleGenerate } from "./native/generate.ts";
import { handleChat } from "./openai/chat.ts";
import { handleCompletions } from "./openai/completions.ts";

type Handler = (
  ctx: ServerContext,
  body: unknown,
  req: Request,
  params: string[],
) => Response | Promise<Response>;

interface Route {
  methods: string[];
  pattern: RegExp;
  handler: Handler;
  /** Whether the route reads a JSON body. */
  body: boolean;
}

const route = (methods: string[], path: string | RegExp, body: boolean, handler: Handler): Route => ({
  methods,
  pattern: typeof path === "string" ? new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`) : path,
  handler,
  body,
});

const ROUTES: Route[] = [
  route(["POST"], "/generate", true, (ctx, body, req) => handleGenerate(ctx, body, req.signal)),
  route(["POST"], "/v1/chat/completions", true, (ctx, body, req) => handleChat(ctx, body, req.signal)),
  route(["POST"], "/v1/completions", true, (ctx, body, req) => handleCompletions(ctx, body, req.signal)),
  route(["GET"], "/v1/models", false, (ctx) => handleModels(ctx)),
  route(
    ["GET"],
    /^\/v1\/models\/(.+)$/,
    false,
    (ctx, _b, _r, p) => handleModel(ctx, decodePathPart(p[0])),
  ),
  route(["GET"], /^\/(?:get_)?model_info$/, false, (ctx) => handleModelInfo(ctx)),
  route(["GET"], /^\/(?:get_)?server_info$/, false, (ctx) => handleServerInfo(ctx)),
  route(["GET"], "/get_load", false, (ctx) => handleLoad(ctx)),
  route(["GET", "POST"], "/health", false, (ctx) => handleHealth(ctx)),
  route(["GET", "POST"], "/health_generate", false, (ctx) => handleHealth(ctx)),
  route(["GET", "POST"], "/flush_cache", false, (ctx) => handleFlushCache(ctx)),
  route(["POST"], "/abort_request", true, (ctx, body) => handleAbortRequest(ctx, body)),
  route(["GET"], "/metrics", false, (ctx) => handleMetrics(ctx)),
  route(["POST"], /^(?:\/v1)?\/tokenize$/, true, (ctx, body) => handleTokenize(ctx, body)),
  route(["POST"], /^(?:\/v1)?\/detokenize$/, true, (ctx, body) => handleDetokenize(ctx, body)),
];

/** A malformed %-escape names no model: 404 rather than a URIError's 500. */
function decodePathPart(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw new ApiError(
      404,
      `The model '${part}' does not exist`,
      "NotFoundError",
      "model",
      "model_not_found",
    );
  }
}

/** Routes exempt from --api-key, as in SGLang. */
const OPEN_PATHS = new Set(["/health", "/health_generate", "/metrics"]);

const CORS_HEADERS = {
  "access-control-allow-origin": "*",
  "access-control-allow-methods": "GET, POST, OPTIONS",
  "access-control-allow-headers": "*",
};

const REASONS: Record<number, string> = {
  200: "OK",
  204: "No Content",
  400: "Bad Request",
  401: "Unauthorized",
  404: "Not Found",
  405: "Method Not Allowed",
  413: "Request Entity Too Large",
  499: "Client Closed Request",
  500: "Internal Server Error",
  503: "Service Unavailable",
};

export function makeHandler(ctx: ServerContext) {
  return async (req: Request, info?: Deno.ServeHandlerInfo): Promise<Response> => {
    const url = new URL(req.url);
    let response: Response;
    try {
      response = await dispatch(ctx, req, url);
    } catch (e) {
      const err = e instanceof ApiError ? e : engineToApi(e);
      if (err.status >= 500 && err.status !== 503) {
        log(`Error on ${req.method} ${url.pathname}: ${err.message}`, "error");
      }
      response = Response.json(errorBody(err), { status: err.status });
    }
    for (const [k, v] of Object.entries(CORS_HEADERS)) response.headers.set(k, v);
    const addr = info?.remoteAddr as Deno.NetAddr | undefined;
    const client = addr ? `${addr.hostname}:${addr.port}` : "-";
    log(
      `INFO:     ${client} - "${req.method} ${url.pathname}${url.search} HTTP/1.1" ${response.status} ${
        REASONS[response.status] ?? ""
      }`.trimEnd(),
    );
    return response;
  };
}

/** How long a request that arrives during the warm-up waits for it before a 503. */
const WARMUP_WAIT_MS = 120_000;

async function dispatch(ctx: ServerContext, req: Request, url: URL): Promise<Response> {
  if (req.method === "OPTIONS") return new Response(null, { status: 204 });
  const path = url.pathname.length > 1 ? url.pathname.replace(/\/+$/, "") : url.pathname;
  let allowedHere = false;
  for (const r of ROUTES) {
    const m = r.pattern.exec(path);
    if (!m) continue;
    allowedHere = true;
    if (!r.methods.includes(req.method)) continue;
    if (ctx.args.api_key !== null && !OPEN_PATHS.has(path)) checkApiKey(req, ctx.args.api_key);
    if (!ctx.ready && !ctx.stopping && r.body) {
      // /v1/models already answers during the warm-up (as SGLang's does, and clients poll it to learn the server
      // is up), so a request right after it must not bounce: it waits for the warm-up, as SGLang queues it.
      if (ctx.whenReady) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([ctx.whenReady, new Promise((done) => timer = setTimeout(done, WARMUP_WAIT_MS))]);
        clearTimeout(timer);
      }
      if (!ctx.ready) throw new ApiError(503, "The server is starting; try again in a moment.");
    }
    const body = r.body ? await readJsonBody(req, ctx.args.max_body_bytes) : undefined;
    if (ctx.args.log_requests && r.body) {
      log(`Receive: ${req.method} ${path} ${JSON.stringify(body).slice(0, 2048)}`);
    }
    return await r.handler(ctx, body, req, m.slice(1));
  }
  if (allowedHere) throw new ApiError(405, `Method ${req.method} is not allowed on ${path}`);
  throw new ApiError(404, `Not found: ${req.method} ${path}`);
}

function checkApiKey(req: Request, key: string): void {
  const header = req.headers.get("authorization") ?? "";
  const given = header.startsWith("Bearer ") ? header.slice(7).trim() : "";
  if (!constantTimeEqual(given, key)) {
    throw new ApiError(401, "Unauthorized: a valid API key is required (Authorization: Bearer KEY).");
  }
}

/** Compares without an early exit so response time does not reveal how much of the key matched. */
export function constantTimeEqual(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  let diff = x.length ^ y.length;
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    diff |= (x[i % (x.length || 1)] ?? 0) ^ (y[i % (y.length || 1)] ?? 0);
  }
  return diff === 0;
}

async function readJsonBody(req: Request, limit: number): Promise<unknown> {
  const declared = Number(req.headers.get("content-length") ?? "0");
  if (declared > limit) {
    throw new ApiError(413, `The request body (${declared} bytes) is over the limit of ${limit} bytes.`);
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (req.body) {
    for await (const chunk of req.body) {
      size += chunk.length;
      if (size > limit) throw new ApiError(413, `The request body is over the limit of ${limit} bytes.`);
      chunks.push(chunk);
    }
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.length;
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw badRequest("The request body is not valid UTF-8.");
  }
  if (text.trim() === "") return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw badRequest(`The request body is not valid JSON: ${(e as Error).message}`);
  }
  rejectLoneSurrogates(value);
  return value;
}

/**
 * A \uD800-\uDFFF escape without its pair is valid JSON but not Unicode text: the tokenizer would silently turn
 * it into U+FFFD. Walks iteratively, as a body may nest as deep as JSON.parse allows.
 */
function rejectLoneSurrogates(value: unknown): void {
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === "string") {
      if (!v.isWellFormed()) {
        throw badRequest(
          "The request body holds a lone UTF-16 surrogate escape (\\uD800-\\uDFFF), not valid Unicode.",
        );
      }
    } else if (Array.isArray(v)) {
      for (const item of v) stack.push(item);
    } else if (v !== null && typeof v === "object") {
      for (const [k, item] of Object.entries(v)) {
        stack.push(k);
        stack.push(item);
      }
    }
  }
}

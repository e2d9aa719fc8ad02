// A stand-in for llm-server's streaming endpoints with controlled timing, so bench_serving can be checked
// against known TTFT and inter-token gaps before (and independently of) the real engine.

export interface StubOptions {
  firstTokenDelayMs: number;
  tokenDelayMs: number;
  vocabSize: number;
  /** Every n-th request answers 500, to exercise failure accounting; 0 never. */
  failEvery?: number;
}

export interface StubRecord {
  path: string;
  body: any;
}

export interface StubServer {
  baseUrl: string;
  requests: StubRecord[];
  peakInFlight: number;
  close(): Promise<void>;
}

const encoder = new TextEncoder();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export function startStubServer(options: StubOptions): StubServer {
  const requests: StubRecord[] = [];
  let inFlight = 0;
  const stub = { requests, peakInFlight: 0 } as StubServer;

  const stream = (events: AsyncGenerator<unknown>) =>
    new ReadableStream<Uint8Array>({
      async start(controller) {
        inFlight++;
        stub.peakInFlight = Math.max(stub.peakInFlight, inFlight);
        try {
          for await (const event of events) {
            controller.enqueue(encoder.encode(`data: ${JSON.stringify(event)}\n\n`));
          }
          controller.enqueue(encoder.encode("data: [DONE]\n\n"));
        } finally {
          inFlight--;
          controller.close();
        }
      },
    });

  async function* generateEvents(body: any) {
    const promptTokens = body.input_ids.length;
    const maxNew: number = body.sampling_params.max_new_tokens;
    const outputIds: number[] = [];
    let text = "";
    for (let i = 0; i < maxNew; i++) {
      await sleep(i === 0 ? options.firstTokenDelayMs : options.tokenDelayMs);
      outputIds.push(i % options.vocabSize);
      text += ` t${i}`;
      const last = i === maxNew - 1;
      yield {
        text,
        output_ids: [...outputIds],
        meta_info: {
          id: "0".repeat(32),
          finish_reason: last ? { type: "length", length: maxNew } : null,
          prompt_tokens: promptTokens,
          completion_tokens: outputIds.length,
          cached_tokens: 0,
        },
      };
    }
  }

  async function* completionEvents(body: any) {
    const maxNew: number = body.max_tokens;
    const base = { id: "cmpl-stub", object: "text_completion", created: 0, model: body.model };
    for (let i = 0; i < maxNew; i++) {
      await sleep(i === 0 ? options.firstTokenDelayMs : options.tokenDelayMs);
      const last = i === maxNew - 1;
      yield {
        ...base,
        choices: [{ index: 0, text: ` t${i}`, logprobs: null, finish_reason: last ? "length" : null }],
      };
    }
    if (body.stream_options?.include_usage) {
      const prompt = body.prompt.length;
      yield {
        ...base,
        choices: [],
        usage: { prompt_tokens: prompt, completion_tokens: maxNew, total_tokens: prompt + maxNew },
      };
    }
  }

  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    const path = new URL(request.url).pathname;
    if (path === "/health") return new Response("");
    if (path === "/get_model_info") {
      return Response.json({
        model_path: "stub",
        tokenizer_path: "stub",
        is_generation: true,
        vocab_size: options.vocabSize,
      });
    }
    if (request.method !== "POST") return new Response("not found", { status: 404 });
    const body = await request.json();
    requests.push({ path, body });
    if (options.failEvery && requests.length % options.failEvery === 0) {
      return Response.json({
        object: "error",
        message: "stub failure",
        type: "InternalServerError",
        code: 500,
      }, {
        status: 500,
      });
    }
    const headers = { "content-type": "text/event-stream" };
    if (path === "/generate") return new Response(stream(generateEvents(body)), { headers });
    if (path === "/v1/completions") return new Response(stream(completionEvents(body)), { headers });
    return new Response("not found", { status: 404 });
  });

  stub.baseUrl = `http://127.0.0.1:${server.addr.port}`;
  stub.close = () => server.shutdown();
  return stub;
}

// Standalone: `deno run -A scripts/bench/stub_server.ts [--port P] [--first-token-ms 40] [--token-ms 10]`,
// for trying bench_serving or bench_cpu.sh (OUR_BASE_URL=...) without the engine.
if (import.meta.main) {
  const { parseFlags } = await import("./args.ts");
  const flags = parseFlags(Deno.args);
  const port = Number(flags["port"] ?? 30999);
  const stub = startStubServer({
    firstTokenDelayMs: Number(flags["first-token-ms"] ?? 40),
    tokenDelayMs: Number(flags["token-ms"] ?? 10),
    vocabSize: 128000,
  });
  // Relay a fixed port to the stub's ephemeral one so callers can name it.
  Deno.serve({ hostname: "127.0.0.1", port }, (request) => {
    const url = new URL(request.url);
    return fetch(stub.baseUrl + url.pathname + url.search, {
      method: request.method,
      headers: request.headers,
      body: request.body,
    });
  });
}

import { ApiError } from "./errors.ts";

const encoder = new TextEncoder();

/** One SSE event; a Uint8Array payload is an event already framed and encoded (`data: ...\n\n`). */
export function sseData(payload: unknown): Uint8Array {
  if (payload instanceof Uint8Array) return payload;
  return encoder.encode(`data: ${typeof payload === "string" ? payload : JSON.stringify(payload)}\n\n`);
}

/**
 * A text/event-stream response from an async iterator (or generator) of payloads, ending with `data: [DONE]`.
 * An error after the headers went out becomes `data: {"error": ...}`; a client that goes away
 * cancels the stream, which returns the generator so its cleanup aborts the engine request.
 */
export function sseResponse(payloads: AsyncIterator<unknown>, headers: HeadersInit = {}): Response {
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { value, done } = await payloads.next();
        if (done) {
          controller.enqueue(sseData("[DONE]"));
          controller.close();
          return;
        }
        controller.enqueue(sseData(value));
      } catch (e) {
        const status = e instanceof ApiError ? e.status : 500;
        const type = e instanceof ApiError ? e.type : "InternalServerError";
        controller.enqueue(sseData({ error: { message: (e as Error).message, type, code: status } }));
        controller.enqueue(sseData("[DONE]"));
        controller.close();
      }
    },
    async cancel() {
      await payloads.return?.(undefined);
    },
  });
  return new Response(body, {
    status: 200,
    headers: {
      ...headers,
      "content-type": "text/event-stream",
      "cache-control": "no-cache",
      "connection": "keep-alive",
    },
  });
}

// A minimal HTTP/1.1 client for one streamed POST over plain TCP.
//
// The benchmark client shares the server's cores, so what it spends per token is taken from the server:
// fetch() hands every network read to a ReadableStream (several promises and an op per chunk), and a
// stream of one SSE event per token pays that per token. Here each socket read is one op into a reused
// buffer, and whatever arrived (often several events) is handed over synchronously.

const CR = 13;
const LF = 10;
const decoder = new TextDecoder();
const encoder = new TextEncoder();

export interface StreamedResponse {
  status: number;
  /** The body, for a response that is not 2xx (bounded); empty otherwise. */
  errorBody: string;
}

/** Offset just past the first "\r\n\r\n" in bytes[0..end), or -1. */
function headerEnd(bytes: Uint8Array, end: number): number {
  for (let i = bytes.indexOf(CR); i >= 0 && i + 3 < end; i = bytes.indexOf(CR, i + 1)) {
    if (bytes[i + 1] === LF && bytes[i + 2] === CR && bytes[i + 3] === LF) return i + 4;
  }
  return -1;
}

/** Undoes chunked transfer coding incrementally: push() raw body bytes, get the payload's pieces. */
class ChunkedDecoder {
  /** Payload bytes left in the current chunk; -1 while a size line is being read. */
  private left = -1;
  /** Bytes of the CRLF after a chunk's data still to skip. */
  private crlf = 0;
  private line = "";
  done = false;

  push(bytes: Uint8Array, onData: (data: Uint8Array) => void): void {
    let at = 0;
    while (at < bytes.length && !this.done) {
      if (this.crlf > 0) {
        const skip = Math.min(this.crlf, bytes.length - at);
        this.crlf -= skip;
        at += skip;
      } else if (this.left > 0) {
        const take = Math.min(this.left, bytes.length - at);
        onData(bytes.subarray(at, at + take));
        this.left -= take;
        at += take;
        if (this.left === 0) {
          this.left = -1;
          this.crlf = 2;
        }
      } else {
        const lf = bytes.indexOf(LF, at);
        const end = lf < 0 ? bytes.length : lf;
        this.line += decoder.decode(bytes.subarray(at, end));
        at = end;
        if (lf < 0) break;
        at++;
        const size = parseInt(this.line.split(";")[0].trim(), 16);
        this.line = "";
        if (!Number.isInteger(size) || size < 0) throw new Error("bad chunk size in the response");
        // The last chunk: trailers (none from our server) and the connection closes after it.
        if (size === 0) this.done = true;
        else this.left = size;
      }
    }
  }
}

/**
 * POSTs `body` (JSON) to `url` and feeds the response body to `onData` as it arrives. Resolves once the body
 * ended; a non-2xx status resolves with its body text instead. `Connection: close`: one request per socket.
 */
export async function postStreaming(
  url: URL,
  body: string,
  onData: (data: Uint8Array) => void,
): Promise<StreamedResponse> {
  const conn = await Deno.connect({ hostname: url.hostname, port: Number(url.port || 80) });
  try {
    conn.setNoDelay(true);
    const payload = encoder.encode(body);
    const head = encoder.encode(
      `POST ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\ncontent-type: application/json\r\n` +
        `content-length: ${payload.length}\r\nconnection: close\r\n\r\n`,
    );
    const request = new Uint8Array(head.length + payload.length);
    request.set(head);
    request.set(payload, head.length);
    for (let sent = 0; sent < request.length;) sent += await conn.write(request.subarray(sent));

    let buf = new Uint8Array(1 << 16);
    let filled = 0;
    let bodyStart = -1;
    // Response head: read until the blank line (it fits in the buffer, grown if not).
    while (bodyStart < 0) {
      if (filled === buf.length) {
        const bigger = new Uint8Array(buf.length * 2);
        bigger.set(buf);
        buf = bigger;
      }
      const n = await conn.read(buf.subarray(filled));
      if (n === null) throw new Error("connection closed before the response headers");
      filled += n;
      bodyStart = headerEnd(buf, filled);
    }
    const headLines = decoder.decode(buf.subarray(0, bodyStart)).split("\r\n");
    const status = Number(headLines[0].split(" ")[1]);
    const headers = new Map<string, string>();
    for (const line of headLines.slice(1)) {
      const colon = line.indexOf(":");
      if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
    }
    const chunked = (headers.get("transfer-encoding") ?? "").toLowerCase().includes("chunked");
    const length = headers.has("content-length") ? Number(headers.get("content-length")) : -1;
    const ok = status >= 200 && status < 300;
    let errorBody = "";
    const deliver = (data: Uint8Array) => {
      if (ok) onData(data);
      else if (errorBody.length < 4096) errorBody += decoder.decode(data);
    };
    const dechunk = new ChunkedDecoder();
    let received = 0;
    const feed = (bytes: Uint8Array) => {
      if (chunked) dechunk.push(bytes, deliver);
      else {
        received += bytes.length;
        deliver(bytes);
      }
    };
    const finished = () => (chunked ? dechunk.done : length >= 0 && received >= length);
    if (filled > bodyStart) feed(buf.subarray(bodyStart, filled));
    // The buffer is reused for every read: consumers copy what they keep.
    while (!finished()) {
      const n = await conn.read(buf);
      if (n === null) break;
      feed(buf.subarray(0, n));
    }
    if (chunked && !dechunk.done) throw new Error("connection closed in the middle of the response body");
    return { status, errorBody };
  } finally {
    try {
      conn.close();
    } catch { /* already closed */ }
  }
}

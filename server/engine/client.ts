import { EngineLibrary, openLibrary, Status } from "./ffi.ts";

export interface EngineInfo {
  architecture: string;
  vocab_size: number;
  context_len: number;
  max_total_num_tokens: number;
  max_running_requests: number;
  max_prefill_tokens: number;
  chunked_prefill_size: number;
  page_size: number;
  eos_token_ids: number[];
  bos_token_id: number | null;
  dtype: string;
  weight_bytes: number;
  kv_bytes: number;
  threads: number;
  device: string;
}

export interface EngineStats {
  num_running_reqs: number;
  num_queue_reqs: number;
  token_usage: number;
  used_slots?: number;
  cached_slots?: number;
  held_slots?: number;
  free_slots?: number;
  max_total_num_tokens: number;
  last_gen_throughput: number;
  cache_hit_rate: number;
  num_retractions?: number;
  prompt_tokens_total: number;
  generation_tokens_total: number;
  integrity_ok?: boolean;
  /** A scheduler step has run past --watchdog-timeout. */
  watchdog_stalled?: boolean;
}

export interface SamplingForEngine {
  temperature: number;
  top_p: number;
  top_k: number;
  min_p: number;
  frequency_penalty: number;
  presence_penalty: number;
  repetition_penalty: number;
  max_new_tokens: number;
  min_new_tokens: number;
  stop_token_ids: number[];
  ignore_eos: boolean;
  logit_bias: Record<string, number>;
  seed: number | null;
}

export interface EngineRequest {
  input_ids: number[];
  rid: string | null;
  sampling: SamplingForEngine;
  return_logprob: boolean;
  top_logprobs_num: number;
  logprob_start_len: number;
}

export type EngineFinish =
  | { type: "length"; length: number }
  | { type: "stop"; matched: number | string }
  | { type: "abort"; message: string };

export interface EngineEvent {
  id: number;
  tokens: number[];
  logprobs?: number[];
  top_logprobs?: [number, number][][];
  input_logprobs?: (number | null)[];
  input_top_logprobs?: [number, number][][];
  prompt_tokens: number;
  cached_tokens: number;
  completion_tokens: number;
  finish: EngineFinish | null;
}

export interface EngineStream {
  readonly id: number;
  readonly events: AsyncIterable<EngineEvent>;
}

/** What the HTTP layer needs from an engine; the FFI engine and the tests' fake both provide it. */
export interface EngineLike {
  info(): EngineInfo;
  stats(): EngineStats;
  /** Throws EngineError (INVALID_ARGUMENT, CAPACITY, SHUTDOWN...) when the request is refused. */
  submit(request: EngineRequest): EngineStream;
  /** Aborting an unknown or finished id is not an error here: the race with finishing is normal. */
  abort(id: number): void;
  abortAll(): void;
  /** Throws EngineError with status BUSY while requests are in flight. */
  flushCache(): void;
  close(): Promise<void>;
}

export class EngineError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/**
 * An unbounded single-consumer queue: the pump pushes, one request handler iterates. A plain iterator
 * rather than an async generator: an item already queued is handed out without a new promise chain.
 */
export class EventQueue<T> implements AsyncIterable<T> {
  private items: T[] = [];
  private head = 0;
  private waiter: ((result: IteratorResult<T>) => void) | null = null;
  private closed = false;

  push(item: T): void {
    const w = this.waiter;
    if (w) {
      this.waiter = null;
      w({ value: item, done: false });
      return;
    }
    this.items.push(item);
  }

  close(): void {
    this.closed = true;
    const w = this.waiter;
    this.waiter = null;
    w?.({ value: undefined, done: true });
  }

  next(): Promise<IteratorResult<T>> {
    if (this.head < this.items.length) {
      const value = this.items[this.head++];
      if (this.head === this.items.length) {
        this.items = [];
        this.head = 0;
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.closed) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => (this.waiter = resolve));
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return { next: () => this.next(), return: () => Promise.resolve({ value: undefined, done: true }) };
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The Rust engine behind FFI, with one event pump routing drained events to per-request queues. */
export class Engine implements EngineLike {
  private readonly queues = new Map<number, EventQueue<EngineEvent>>();
  private drainBuffer = new Uint8Array(1 << 16);
  private readonly written = new BigUint64Array(1);
  private readonly errorBuffer = new Uint8Array(4096);
  private closing = false;
  private pumpDone: Promise<void> = Promise.resolve();
  private cachedInfo: EngineInfo | null = null;

  private constructor(private readonly lib: EngineLibrary, private readonly handle: Deno.PointerObject) {}

  static async create(libraryPath: string, config: Record<string, unknown>): Promise<Engine> {
    let lib: EngineLibrary;
    try {
      lib = openLibrary(libraryPath);
    } catch (e) {
      throw new EngineError(
        Status.LOAD,
        `cannot open the engine library ${libraryPath}: ${(e as Error).message}`,
      );
    }
    const configBytes = encoder.encode(JSON.stringify(config));
    const out = new BigUint64Array(1);
    const err = new Uint8Array(4096);
    const status = await lib.symbols.llm_engine_create(
      configBytes,
      BigInt(configBytes.length),
      out,
      err,
      BigInt(err.length),
    );
    const handle = Deno.UnsafePointer.create(out[0]);
    if (status !== Status.OK || handle === null) {
      const end = err.indexOf(0);
      const message = decoder.decode(err.subarray(0, end < 0 ? err.length : end)) || `status ${status}`;
      lib.close();
      throw new EngineError(status, message);
    }
    const engine = new Engine(lib, handle);
    engine.pumpDone = engine.pump();
    return engine;
  }

  info(): EngineInfo {
    this.cachedInfo ??= this.readJson((buf, cap, w) =>
      this.lib.symbols.llm_engine_info(this.handle, buf, cap, w)
    );
    return this.cachedInfo!;
  }

  stats(): EngineStats {
    return this.readJson((buf, cap, w) => this.lib.symbols.llm_engine_stats(this.handle, buf, cap, w));
  }

  submit(request: EngineRequest): EngineStream {
    const bytes = encoder.encode(JSON.stringify(request));
    const out = new BigUint64Array(1);
    const status = this.lib.symbols.llm_engine_submit(this.handle, bytes, BigInt(bytes.length), out);
    this.check(status);
    const id = Number(out[0]);
    const queue = new EventQueue<EngineEvent>();
    this.queues.set(id, queue);
    return { id, events: queue };
  }

  abort(id: number): void {
    const status = this.lib.symbols.llm_engine_abort(this.handle, BigInt(id));
    if (status !== Status.NOT_FOUND) this.check(status);
  }

  abortAll(): void {
    this.check(this.lib.symbols.llm_engine_abort_all(this.handle));
  }

  flushCache(): void {
    this.check(this.lib.symbols.llm_engine_flush_cache(this.handle));
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    await this.pumpDone;
    await this.lib.symbols.llm_engine_free(this.handle);
    for (const q of this.queues.values()) q.close();
    this.queues.clear();
    this.lib.close();
  }

  /** One FFI wait per scheduler step, then one synchronous drain of everything pending. */
  private async pump(): Promise<void> {
    while (!this.closing) {
      const n = await this.lib.symbols.llm_engine_wait(this.handle, 50);
      if (n === -Status.SHUTDOWN) break;
      if (n > 0) this.drainAll();
    }
    if (!this.closing) {
      for (const q of this.queues.values()) q.close();
      this.queues.clear();
    }
  }

  private drainAll(): void {
    for (let guard = 0; guard < 1024; guard++) {
      const status = this.lib.symbols.llm_engine_drain(
        this.handle,
        this.drainBuffer,
        BigInt(this.drainBuffer.length),
        this.written,
      );
      if (status === Status.BUFFER_TOO_SMALL) {
        this.drainBuffer = new Uint8Array(Math.max(Number(this.written[0]), this.drainBuffer.length * 2));
        continue;
      }
      this.check(status);
      const records = JSON.parse(
        decoder.decode(this.drainBuffer.subarray(0, Number(this.written[0]))),
      ) as EngineEvent[];
      if (records.length === 0) return;
      for (const event of records) this.route(event);
    }
  }

  private route(event: EngineEvent): void {
    const queue = this.queues.get(event.id);
    if (!queue) return;
    queue.push(event);
    if (event.finish) {
      queue.close();
      this.queues.delete(event.id);
    }
  }

  private readJson<T>(call: (buf: Uint8Array, cap: bigint, written: BigUint64Array) => number): T {
    let buf = new Uint8Array(8192);
    const written = new BigUint64Array(1);
    for (;;) {
      const status = call(buf, BigInt(buf.length), written);
      if (status === Status.BUFFER_TOO_SMALL) {
        buf = new Uint8Array(Number(written[0]));
        continue;
      }
      this.check(status);
      return JSON.parse(decoder.decode(buf.subarray(0, Number(written[0]))));
    }
  }

  private check(status: number): void {
    if (status === Status.OK) return;
    const len = Number(
      this.lib.symbols.llm_engine_last_error(this.handle, this.errorBuffer, BigInt(this.errorBuffer.length)),
    );
    const end = Math.min(len, this.errorBuffer.length - 1);
    const message = decoder.decode(this.errorBuffer.subarray(0, end)) || `engine status ${status}`;
    throw new EngineError(status, message);
  }
}

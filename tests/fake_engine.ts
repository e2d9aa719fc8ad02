import {
  EngineError,
  EngineEvent,
  EngineInfo,
  EngineLike,
  EngineRequest,
  EngineStats,
  EngineStream,
  EventQueue,
} from "../server/engine/client.ts";
import { Status } from "../server/engine/ffi.ts";

/**
 * A deterministic engine for HTTP-layer tests: every request emits `script` (cycled) one token per
 * step, honouring max_new_tokens, stop_token_ids and abort, with made-up logprobs.
 */
export class FakeEngine implements EngineLike {
  readonly submitted: EngineRequest[] = [];
  readonly aborted: number[] = [];
  private readonly running = new Map<
    number,
    { req: EngineRequest; queue: EventQueue<EngineEvent>; produced: number }
  >();
  private nextId = 1;
  private timer: ReturnType<typeof setInterval> | null = null;
  private promptTotal = 0;
  private generatedTotal = 0;
  private readonly seenPrompts = new Set<string>();

  constructor(
    private readonly script: number[],
    private readonly infoOverride: Partial<EngineInfo> = {},
    private readonly stepMs = 1,
  ) {}

  info(): EngineInfo {
    return {
      architecture: "LlamaForCausalLM",
      vocab_size: 128256,
      context_len: 256,
      max_total_num_tokens: 4096,
      max_running_requests: 16,
      max_prefill_tokens: 16384,
      chunked_prefill_size: 8192,
      page_size: 1,
      eos_token_ids: [128001, 128008, 128009],
      bos_token_id: 128000,
      dtype: "float32",
      weight_bytes: 1 << 20,
      kv_bytes: 1 << 20,
      threads: 1,
      device: "fake",
      ...this.infoOverride,
    };
  }

  stats(): EngineStats {
    let used = 0;
    for (const r of this.running.values()) used += r.req.input_ids.length + r.produced;
    return {
      num_running_reqs: this.running.size,
      num_queue_reqs: 0,
      token_usage: used / 4096,
      used_slots: used,
      max_total_num_tokens: 4096,
      last_gen_throughput: 0,
      cache_hit_rate: 0,
      prompt_tokens_total: this.promptTotal,
      generation_tokens_total: this.generatedTotal,
    };
  }

  get runningCount(): number {
    return this.running.size;
  }

  submit(req: EngineRequest): EngineStream {
    if (req.input_ids.length === 0) throw new EngineError(Status.INVALID_ARGUMENT, "empty input");
    const id = this.nextId++;
    const queue = new EventQueue<EngineEvent>();
    this.submitted.push(req);
    this.running.set(id, { req, queue, produced: 0 });
    this.promptTotal += req.input_ids.length;
    this.timer ??= setInterval(() => this.step(), this.stepMs);
    return { id, events: queue };
  }

  abort(id: number): void {
    const r = this.running.get(id);
    if (!r) return;
    this.aborted.push(id);
    this.finish(id, [], { type: "abort", message: "Aborted by the client." });
  }

  abortAll(): void {
    for (const id of [...this.running.keys()]) this.abort(id);
  }

  flushCache(): void {
    if (this.running.size > 0) throw new EngineError(Status.BUSY, "requests are running");
    this.seenPrompts.clear();
  }

  close(): Promise<void> {
    this.abortAll();
    this.stopTimer();
    return Promise.resolve();
  }

  private stopTimer(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  private step(): void {
    for (const [id, r] of [...this.running]) {
      const token = this.script[r.produced % this.script.length];
      r.produced++;
      this.generatedTotal++;
      const s = r.req.sampling;
      if (s.stop_token_ids.includes(token) && r.produced > s.min_new_tokens) {
        this.finish(id, [token], { type: "stop", matched: token });
      } else if (r.produced >= s.max_new_tokens) {
        this.finish(id, [token], { type: "length", length: r.produced });
      } else {
        r.queue.push(this.event(id, r, [token], null));
      }
    }
    if (this.running.size === 0) this.stopTimer();
  }

  private finish(id: number, tokens: number[], finish: EngineEvent["finish"]): void {
    const r = this.running.get(id)!;
    this.running.delete(id);
    r.queue.push(this.event(id, r, tokens, finish));
    r.queue.close();
    this.seenPrompts.add(JSON.stringify(r.req.input_ids));
  }

  private event(
    id: number,
    r: { req: EngineRequest; produced: number },
    tokens: number[],
    finish: EngineEvent["finish"],
  ): EngineEvent {
    const key = JSON.stringify(r.req.input_ids);
    const e: EngineEvent = {
      id,
      tokens,
      prompt_tokens: r.req.input_ids.length,
      cached_tokens: this.seenPrompts.has(key) ? r.req.input_ids.length - 1 : 0,
      completion_tokens: r.produced,
      finish,
    };
    if (r.req.return_logprob) {
      e.logprobs = tokens.map(() => -0.5);
      e.top_logprobs = tokens.map((t) =>
        Array.from({ length: r.req.top_logprobs_num }, (_, i) => [t + i, -0.5 - i] as [number, number])
      );
    }
    return e;
  }
}

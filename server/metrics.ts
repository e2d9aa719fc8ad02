import type { EngineStats } from "./engine/client.ts";

const LATENCY_BUCKETS = [
  0.001,
  0.005,
  0.01,
  0.02,
  0.04,
  0.06,
  0.08,
  0.1,
  0.25,
  0.5,
  0.75,
  1,
  2.5,
  5,
  7.5,
  10,
  20,
  40,
  80,
  160,
];

class Histogram {
  private readonly counts = new Array(LATENCY_BUCKETS.length).fill(0);
  private sum = 0;
  private count = 0;

  observe(value: number): void {
    this.sum += value;
    this.count++;
    for (let i = 0; i < LATENCY_BUCKETS.length; i++) if (value <= LATENCY_BUCKETS[i]) this.counts[i]++;
  }

  render(name: string, help: string, labels: string): string[] {
    const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} histogram`];
    LATENCY_BUCKETS.forEach((b, i) => lines.push(`${name}_bucket{${labels},le="${b}"} ${this.counts[i]}`));
    lines.push(`${name}_bucket{${labels},le="+Inf"} ${this.count}`);
    lines.push(`${name}_sum{${labels}} ${this.sum}`, `${name}_count{${labels}} ${this.count}`);
    return lines;
  }
}

/** Request-level counters and latency histograms behind /metrics (sglang: names). */
export class Metrics {
  private readonly ttft = new Histogram();
  private readonly itl = new Histogram();
  private readonly e2e = new Histogram();
  private requestsTotal = 0;
  inFlight = 0;

  requestStarted(): void {
    this.inFlight++;
  }
  requestEnded(): void {
    this.inFlight--;
  }
  firstToken(seconds: number): void {
    this.ttft.observe(seconds);
  }
  interToken(seconds: number): void {
    this.itl.observe(seconds);
  }
  requestFinished(seconds: number, _prompt: number, _completion: number): void {
    this.e2e.observe(seconds);
    this.requestsTotal++;
  }

  render(modelName: string, stats: EngineStats): string {
    const labels = `model_name=${JSON.stringify(modelName)}`;
    const lines: string[] = [];
    const gauge = (name: string, help: string, value: number, type = "gauge") => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, `${name}{${labels}} ${value}`);
    };
    gauge(
      "sglang:prompt_tokens_total",
      "Number of prefill tokens processed.",
      stats.prompt_tokens_total,
      "counter",
    );
    gauge(
      "sglang:generation_tokens_total",
      "Number of generation tokens processed.",
      stats.generation_tokens_total,
      "counter",
    );
    gauge("sglang:num_requests_total", "Number of requests finished.", this.requestsTotal, "counter");
    gauge("sglang:num_running_reqs", "The number of running requests.", stats.num_running_reqs);
    gauge("sglang:num_queue_reqs", "The number of requests in the waiting queue.", stats.num_queue_reqs);
    gauge("sglang:token_usage", "The token usage.", stats.token_usage);
    gauge("sglang:cache_hit_rate", "The prefix cache hit rate.", stats.cache_hit_rate);
    gauge("sglang:gen_throughput", "The generation throughput (token/s).", stats.last_gen_throughput);
    lines.push(
      ...this.ttft.render(
        "sglang:time_to_first_token_seconds",
        "Histogram of time to first token in seconds.",
        labels,
      ),
    );
    lines.push(
      ...this.itl.render(
        "sglang:inter_token_latency_seconds",
        "Histogram of inter-token latency in seconds.",
        labels,
      ),
    );
    lines.push(
      ...this.e2e.render(
        "sglang:e2e_request_latency_seconds",
        "Histogram of end-to-end request latency in seconds",
        labels,
      ),
    );
    return lines.join("\n") + "\n";
  }
}

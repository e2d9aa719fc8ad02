// Aggregate request outcomes into SGLang bench_serving's metrics, result table and JSONL record.

import type { RequestOutcome } from "./backends.ts";

export interface BenchMetrics {
  completed: number;
  failed: number;
  totalInput: number;
  totalOutput: number;
  duration: number;
  requestThroughput: number;
  inputThroughput: number;
  outputThroughput: number;
  totalThroughput: number;
  concurrency: number;
  meanE2eMs: number;
  medianE2eMs: number;
  meanTtftMs: number;
  medianTtftMs: number;
  p99TtftMs: number;
  meanTpotMs: number;
  medianTpotMs: number;
  meanItlMs: number;
  medianItlMs: number;
  p95ItlMs: number;
  p99ItlMs: number;
  maxItlMs: number;
}

function mean(values: number[]): number {
  return values.length ? values.reduce((a, b) => a + b, 0) / values.length : 0;
}

/** Linear-interpolated percentile, numpy's default, so numbers compare with SGLang's. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (p / 100) * (sorted.length - 1);
  const low = Math.floor(rank);
  const high = Math.ceil(rank);
  return sorted[low] + (sorted[high] - sorted[low]) * (rank - low);
}

export function computeMetrics(outcomes: RequestOutcome[], duration: number): BenchMetrics {
  const ok = outcomes.filter((o) => o.success);
  const totalInput = ok.reduce((a, o) => a + o.promptLen, 0);
  const totalOutput = ok.reduce((a, o) => a + o.outputLen, 0);
  const e2e = ok.map((o) => o.latency * 1000);
  const ttft = ok.map((o) => o.ttft * 1000);
  const itl = ok.flatMap((o) => o.itl.map((s) => s * 1000));
  const tpot = ok.filter((o) => o.outputLen > 1).map((o) =>
    ((o.latency - o.ttft) / (o.outputLen - 1)) * 1000
  );
  return {
    completed: ok.length,
    failed: outcomes.length - ok.length,
    totalInput,
    totalOutput,
    duration,
    requestThroughput: ok.length / duration,
    inputThroughput: totalInput / duration,
    outputThroughput: totalOutput / duration,
    totalThroughput: (totalInput + totalOutput) / duration,
    concurrency: e2e.reduce((a, b) => a + b, 0) / 1000 / duration,
    meanE2eMs: mean(e2e),
    medianE2eMs: percentile(e2e, 50),
    meanTtftMs: mean(ttft),
    medianTtftMs: percentile(ttft, 50),
    p99TtftMs: percentile(ttft, 99),
    meanTpotMs: mean(tpot),
    medianTpotMs: percentile(tpot, 50),
    meanItlMs: mean(itl),
    medianItlMs: percentile(itl, 50),
    p95ItlMs: percentile(itl, 95),
    p99ItlMs: percentile(itl, 99),
    maxItlMs: itl.length ? Math.max(...itl) : 0,
  };
}

/** Python's format(s, fill + "^" + width): extra fill goes to the right. */
function centre(title: string, fill: string, width = 50): string {
  const pad = Math.max(0, width - title.length);
  const left = Math.floor(pad / 2);
  return fill.repeat(left) + title + fill.repeat(pad - left);
}

/** Python's str(float): whole numbers keep ".0", infinity is "inf". */
export function pythonFloat(value: number): string {
  if (value === Infinity) return "inf";
  return Number.isInteger(value) ? value.toFixed(1) : String(value);
}

function row(label: string, value: string | number): string {
  const text = typeof value === "number" ? value.toFixed(2) : value;
  return label.padEnd(40) + " " + text.padEnd(10);
}

export interface TableContext {
  backend: string;
  requestRate: number;
  maxConcurrency: number | null;
}

export function formatTable(metrics: BenchMetrics, context: TableContext): string {
  return [
    centre(" Serving Benchmark Result ", "="),
    row("Backend:", context.backend),
    row("Traffic request rate:", pythonFloat(context.requestRate)),
    row(
      "Max request concurrency:",
      context.maxConcurrency === null ? "not set" : String(context.maxConcurrency),
    ),
    row("Successful requests:", String(metrics.completed)),
    row("Benchmark duration (s):", metrics.duration),
    row("Total input tokens:", String(metrics.totalInput)),
    row("Total generated tokens:", String(metrics.totalOutput)),
    row("Request throughput (req/s):", metrics.requestThroughput),
    row("Input token throughput (tok/s):", metrics.inputThroughput),
    row("Output token throughput (tok/s):", metrics.outputThroughput),
    row("Total token throughput (tok/s):", metrics.totalThroughput),
    row("Concurrency:", metrics.concurrency),
    centre("End-to-End Latency", "-"),
    row("Mean E2E Latency (ms):", metrics.meanE2eMs),
    row("Median E2E Latency (ms):", metrics.medianE2eMs),
    centre("Time to First Token", "-"),
    row("Mean TTFT (ms):", metrics.meanTtftMs),
    row("Median TTFT (ms):", metrics.medianTtftMs),
    row("P99 TTFT (ms):", metrics.p99TtftMs),
    centre("Inter-Token Latency", "-"),
    row("Mean ITL (ms):", metrics.meanItlMs),
    row("Median ITL (ms):", metrics.medianItlMs),
    row("P95 ITL (ms):", metrics.p95ItlMs),
    row("P99 ITL (ms):", metrics.p99ItlMs),
    row("Max ITL (ms):", metrics.maxItlMs),
    "=".repeat(50),
  ].join("\n");
}

/** One JSONL line with SGLang's field names, plus the run's parameters. */
export function jsonRecord(metrics: BenchMetrics, context: TableContext, params: Record<string, unknown>) {
  return {
    backend: context.backend,
    request_rate: context.requestRate === Infinity ? "inf" : context.requestRate,
    max_concurrency: context.maxConcurrency,
    ...params,
    completed: metrics.completed,
    failed: metrics.failed,
    total_input_tokens: metrics.totalInput,
    total_output_tokens: metrics.totalOutput,
    duration: metrics.duration,
    request_throughput: metrics.requestThroughput,
    input_throughput: metrics.inputThroughput,
    output_throughput: metrics.outputThroughput,
    total_throughput: metrics.totalThroughput,
    concurrency: metrics.concurrency,
    mean_e2e_latency_ms: metrics.meanE2eMs,
    median_e2e_latency_ms: metrics.medianE2eMs,
    mean_ttft_ms: metrics.meanTtftMs,
    median_ttft_ms: metrics.medianTtftMs,
    p99_ttft_ms: metrics.p99TtftMs,
    mean_tpot_ms: metrics.meanTpotMs,
    median_tpot_ms: metrics.medianTpotMs,
    mean_itl_ms: metrics.meanItlMs,
    median_itl_ms: metrics.medianItlMs,
    p95_itl_ms: metrics.p95ItlMs,
    p99_itl_ms: metrics.p99ItlMs,
    max_itl_ms: metrics.maxItlMs,
  };
}

// Sends a dataset at a Poisson request rate under an optional concurrency cap and times the whole run.

import { type BackendOptions, type RequestOutcome, sendRequest } from "./backends.ts";
import { type BenchRequest, SeededRandom } from "./datasets.ts";

export interface RunOptions {
  requestRate: number;
  maxConcurrency: number | null;
  seed: number;
}

export interface RunResult {
  outcomes: RequestOutcome[];
  duration: number;
}

export async function runBenchmark(
  backend: BackendOptions,
  requests: BenchRequest[],
  run: RunOptions,
): Promise<RunResult> {
  const arrivals = new SeededRandom(run.seed ^ 0x5bd1e995);
  const limit = run.maxConcurrency ?? Infinity;
  let inFlight = 0;
  const waiting: (() => void)[] = [];
  const acquire = async () => {
    while (inFlight >= limit) await new Promise<void>((resolve) => waiting.push(resolve));
    inFlight++;
  };
  const release = () => {
    inFlight--;
    waiting.shift()?.();
  };

  const start = performance.now();
  const pending: Promise<RequestOutcome>[] = [];
  for (const request of requests) {
    pending.push((async () => {
      await acquire();
      try {
        return await sendRequest(backend, request);
      } finally {
        release();
      }
    })());
    if (Number.isFinite(run.requestRate)) {
      const gapMs = arrivals.exponential(run.requestRate) * 1000;
      await new Promise((resolve) => setTimeout(resolve, gapMs));
    }
  }
  const outcomes = await Promise.all(pending);
  return { outcomes, duration: (performance.now() - start) / 1000 };
}

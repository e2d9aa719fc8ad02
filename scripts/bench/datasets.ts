// Benchmark prompts as token ids, following SGLang's bench_serving datasets.

export interface BenchRequest {
  promptIds: number[];
  outputLen: number;
}

/** Seeded PRNG (mulberry32) so a seed gives the same prompts on every run and machine. */
export class SeededRandom {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Integer uniform in [low, high] inclusive. */
  int(low: number, high: number): number {
    return low + Math.floor(this.next() * (high - low + 1));
  }
  /** Exponential with the given rate (Poisson arrivals). */
  exponential(rate: number): number {
    return -Math.log(1 - this.next()) / rate;
  }
  tokens(count: number, vocabSize: number): number[] {
    return Array.from({ length: count }, () => this.int(0, vocabSize - 1));
  }
}

/** SGLang's rule: lengths uniform in [max(1, floor(L * ratio)), L]. */
export function lengthRange(length: number, ratio: number): [number, number] {
  return [Math.max(1, Math.floor(length * ratio)), length];
}

export interface RandomDatasetOptions {
  numPrompts: number;
  inputLen: number;
  outputLen: number;
  rangeRatio: number;
  vocabSize: number;
  seed: number;
}

export function randomDataset(o: RandomDatasetOptions): BenchRequest[] {
  if (o.rangeRatio < 0 || o.rangeRatio > 1) throw new Error("--random-range-ratio must be in [0, 1]");
  if (o.inputLen < 1 || o.outputLen < 1) {
    throw new Error("--random-input-len and --random-output-len must be >= 1");
  }
  const rng = new SeededRandom(o.seed);
  const [inLow, inHigh] = lengthRange(o.inputLen, o.rangeRatio);
  const [outLow, outHigh] = lengthRange(o.outputLen, o.rangeRatio);
  return Array.from({ length: o.numPrompts }, () => ({
    promptIds: rng.tokens(rng.int(inLow, inHigh), o.vocabSize),
    outputLen: rng.int(outLow, outHigh),
  }));
}

export interface SharedPrefixOptions {
  numGroups: number;
  promptsPerGroup: number;
  systemPromptLen: number;
  questionLen: number;
  outputLen: number;
  vocabSize: number;
  seed: number;
}

/**
 * Groups of prompts that share one long system prompt and differ in a short question: the workload the
 * radix prefix cache exists for. Prompts are interleaved across groups (as SGLang shuffles them) so a cache
 * hit needs the prefix to survive between groups, not just between neighbours.
 */
export function sharedPrefixDataset(o: SharedPrefixOptions): BenchRequest[] {
  const rng = new SeededRandom(o.seed);
  const groups = Array.from({ length: o.numGroups }, () => rng.tokens(o.systemPromptLen, o.vocabSize));
  const requests: BenchRequest[] = [];
  for (let q = 0; q < o.promptsPerGroup; q++) {
    for (const system of groups) {
      requests.push({
        promptIds: [...system, ...rng.tokens(o.questionLen, o.vocabSize)],
        outputLen: o.outputLen,
      });
    }
  }
  return requests;
}

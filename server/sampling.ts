import { badRequest } from "./errors.ts";
import type { SamplingForEngine } from "./engine/client.ts";

/** SGLang's sampling_params, after validation. */
export interface SamplingParams {
  max_new_tokens: number;
  temperature: number;
  top_p: number;
  top_k: number;
  min_p: number;
  frequency_penalty: number;
  presence_penalty: number;
  repetition_penalty: number;
  min_new_tokens: number;
  stop: string[];
  stop_token_ids: number[];
  n: number;
  ignore_eos: boolean;
  skip_special_tokens: boolean;
  spaces_between_special_tokens: boolean;
  no_stop_trim: boolean;
  logit_bias: Record<string, number>;
  sampling_seed: number | null;
}

export const SAMPLING_DEFAULTS: SamplingParams = {
  max_new_tokens: 128,
  temperature: 1.0,
  top_p: 1.0,
  top_k: -1,
  min_p: 0,
  frequency_penalty: 0,
  presence_penalty: 0,
  repetition_penalty: 1.0,
  min_new_tokens: 0,
  stop: [],
  stop_token_ids: [],
  n: 1,
  ignore_eos: false,
  skip_special_tokens: true,
  spaces_between_special_tokens: true,
  no_stop_trim: false,
  logit_bias: {},
  sampling_seed: null,
};

const NUMBER_KEYS = [
  "temperature",
  "top_p",
  "min_p",
  "frequency_penalty",
  "presence_penalty",
  "repetition_penalty",
];
const INT_KEYS = ["max_new_tokens", "top_k", "min_new_tokens", "n", "sampling_seed"];
const BOOL_KEYS = ["ignore_eos", "skip_special_tokens", "spaces_between_special_tokens", "no_stop_trim"];
const UNSUPPORTED = ["json_schema", "regex", "ebnf", "structural_tag"];

/** Validates raw sampling params (SGLang's names); null/undefined keys take defaults. */
export function parseSamplingParams(
  raw: unknown,
  vocabSize: number,
  prefix = "sampling_params.",
): SamplingParams {
  if (raw === undefined || raw === null) raw = {};
  if (typeof raw !== "object" || Array.isArray(raw)) {
    throw badRequest(`${prefix.slice(0, -1)} must be an object`, prefix.slice(0, -1));
  }
  const r = raw as Record<string, unknown>;
  const out: SamplingParams = { ...SAMPLING_DEFAULTS, stop: [], stop_token_ids: [], logit_bias: {} };
  const o = out as unknown as Record<string, unknown>;
  for (const key of NUMBER_KEYS) {
    const v = r[key];
    if (v === undefined || v === null) continue;
    if (typeof v !== "number" || !Number.isFinite(v)) {
      throw badRequest(`${prefix}${key} must be a number, got ${JSON.stringify(v)}`, key);
    }
    o[key] = v;
  }
  for (const key of INT_KEYS) {
    const v = r[key];
    if (v === undefined || v === null) continue;
    if (typeof v !== "number" || !Number.isInteger(v)) {
      throw badRequest(`${prefix}${key} must be an integer, got ${JSON.stringify(v)}`, key);
    }
    o[key] = v;
  }
  for (const key of BOOL_KEYS) {
    const v = r[key];
    if (v === undefined || v === null) continue;
    if (typeof v !== "boolean") {
      throw badRequest(`${prefix}${key} must be a boolean, got ${JSON.stringify(v)}`, key);
    }
    o[key] = v;
  }
  if (r.stop !== undefined && r.stop !== null) {
    const stop = typeof r.stop === "string" ? [r.stop] : r.stop;
    if (!Array.isArray(stop) || !stop.every((s) => typeof s === "string")) {
      throw badRequest(`${prefix}stop must be a string or a list of strings`, "stop");
    }
    out.stop = stop.filter((s) => s.length > 0);
  }
  if (r.stop_token_ids !== undefined && r.stop_token_ids !== null) {
    const ids = r.stop_token_ids;
    if (!Array.isArray(ids) || !ids.every((t) => Number.isInteger(t) && t >= 0 && t < vocabSize)) {
      throw badRequest(
        `${prefix}stop_token_ids must be a list of token ids in [0, ${vocabSize})`,
        "stop_token_ids",
      );
    }
    out.stop_token_ids = ids as number[];
  }
  if (r.logit_bias !== undefined && r.logit_bias !== null) {
    const bias = r.logit_bias;
    if (typeof bias !== "object" || Array.isArray(bias)) {
      throw badRequest(`${prefix}logit_bias must be an object`, "logit_bias");
    }
    for (const [k, v] of Object.entries(bias as Record<string, unknown>)) {
      const id = Number(k);
      if (!/^\d+$/.test(k) || id >= vocabSize) {
        throw badRequest(`${prefix}logit_bias key ${JSON.stringify(k)} is not a token id`, "logit_bias");
      }
      if (typeof v !== "number" || !Number.isFinite(v)) {
        throw badRequest(`${prefix}logit_bias[${k}] must be a number`, "logit_bias");
      }
      out.logit_bias[k] = v;
    }
  }
  for (const key of UNSUPPORTED) {
    if (r[key] !== undefined && r[key] !== null) {
      throw badRequest(`${prefix}${key}: constrained decoding is not supported`, key);
    }
  }
  checkRanges(out, prefix);
  return out;
}

function checkRanges(p: SamplingParams, prefix: string): void {
  const fail = (key: string, rule: string, value: unknown) => {
    throw badRequest(`${prefix}${key} must be ${rule}, got ${value}.`, key);
  };
  if (p.temperature < 0) fail("temperature", "non-negative", p.temperature);
  if (!(p.top_p > 0 && p.top_p <= 1)) fail("top_p", "in (0, 1]", p.top_p);
  if (!(p.min_p >= 0 && p.min_p <= 1)) fail("min_p", "in [0, 1]", p.min_p);
  if (p.top_k < -1 || p.top_k === 0) fail("top_k", "-1 (disable) or at least 1", p.top_k);
  if (!(p.frequency_penalty >= -2 && p.frequency_penalty <= 2)) {
    fail("frequency_penalty", "in [-2, 2]", p.frequency_penalty);
  }
  if (!(p.presence_penalty >= -2 && p.presence_penalty <= 2)) {
    fail("presence_penalty", "in [-2, 2]", p.presence_penalty);
  }
  if (!(p.repetition_penalty > 0 && p.repetition_penalty <= 2)) {
    fail("repetition_penalty", "in (0, 2]", p.repetition_penalty);
  }
  if (p.max_new_tokens < 0) fail("max_new_tokens", "at least 0", p.max_new_tokens);
  if (p.min_new_tokens < 0) fail("min_new_tokens", "at least 0", p.min_new_tokens);
  if (p.min_new_tokens > p.max_new_tokens) {
    fail("min_new_tokens", `at most max_new_tokens (${p.max_new_tokens})`, p.min_new_tokens);
  }
  if (p.n < 1 || p.n > 128) fail("n", "in [1, 128]", p.n);
  if (p.sampling_seed !== null && (p.sampling_seed < 0 || p.sampling_seed > Number.MAX_SAFE_INTEGER)) {
    fail("sampling_seed", `in [0, ${Number.MAX_SAFE_INTEGER}]`, p.sampling_seed);
  }
}

/**
 * The params of sibling `index` of an n > 1 request: a seeded request gives each sibling its own stream
 * (seed + index), so the choices differ yet the whole set repeats for the same seed.
 */
export function siblingSampling(p: SamplingParams, index: number): SamplingParams {
  if (p.sampling_seed === null || index === 0) return p;
  return { ...p, sampling_seed: (p.sampling_seed + index) % (Number.MAX_SAFE_INTEGER + 1) };
}

/** What the engine gets: greedy below 1e-6 as SGLang does, EOS handled by the engine unless ignore_eos. */
export function toEngineSampling(p: SamplingParams, eosIds: Iterable<number>): SamplingForEngine {
  const greedy = p.temperature < 1e-6;
  const stopIds = new Set(p.stop_token_ids);
  if (!p.ignore_eos) { for (const id of eosIds) stopIds.add(id); }
  return {
    temperature: greedy ? 0 : p.temperature,
    top_p: p.top_p,
    top_k: greedy ? 1 : p.top_k,
    min_p: p.min_p,
    frequency_penalty: p.frequency_penalty,
    presence_penalty: p.presence_penalty,
    repetition_penalty: p.repetition_penalty,
    max_new_tokens: p.max_new_tokens,
    min_new_tokens: p.min_new_tokens,
    stop_token_ids: [...stopIds],
    ignore_eos: p.ignore_eos,
    logit_bias: p.logit_bias,
    seed: p.sampling_seed,
  };
}

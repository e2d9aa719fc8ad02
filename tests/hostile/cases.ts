/**
 * Generated hostile requests: malformed and truncated JSON, wrong types, missing and unknown fields, extreme numbers,
 * invalid UTF-8, lone surrogates, control characters, deep nesting, huge bodies and lists, over-long prompts,
 * special-token text, empty messages, every endpoint with every method. Each case says which statuses are right;
 * a 4xx must carry the documented error body ({object: "error", message, type, param, code}).
 * Deterministic: the mutations come from a seeded generator, so a failure names a case that can be replayed.
 */
import { seededRandom } from "../../scripts/lib/seeded_random.ts";
import { bodyCases } from "./body_cases.ts";
import { type CaseLimits, CaseList, type HostileCase } from "./case_list.ts";
import { messageCases } from "./message_cases.ts";
import { routeCases } from "./route_cases.ts";
import { sizeCases } from "./size_cases.ts";
import { textCases } from "./text_cases.ts";

export type { CaseLimits, HostileCase } from "./case_list.ts";

/** Every case, in a fixed order for a given seed. */
export function hostileCases(limits: CaseLimits, seed = 1): HostileCase[] {
  const rand = seededRandom(seed);
  const list = new CaseList();
  bodyCases(list, rand);
  textCases(list, limits);
  sizeCases(list, limits, rand);
  messageCases(list);
  routeCases(list);
  return list.cases;
}

/** Per-endpoint body mutations: the valid body, malformed and truncated JSON, non-object tops, unknown
 * fields, wrong types and bad values per field, invalid UTF-8 inside a string. */
import { BAD_VALUES, MALFORMED, validBodies, WRONG_TYPES } from "./bad_values.ts";
import { BAD, CaseList, OK_OR_BAD } from "./case_list.ts";

/** Appends every endpoint's mutations; `rand` picks the truncation points. */
export function bodyCases(list: CaseList, rand: () => number) {
  const bodies = validBodies();
  for (const [path, valid] of Object.entries(bodies)) {
    // The valid body itself: the baseline every mutation departs from.
    list.postJson(`valid ${path}`, path, valid, [200]);
    for (const [i, text] of MALFORMED.entries()) list.post(`malformed #${i} ${path}`, path, text, BAD);
    // Truncated at seeded cut points (never at the end, never empty: an empty body means {} here).
    const full = JSON.stringify(valid);
    const cuts = new Set<number>();
    while (cuts.size < Math.min(8, full.length - 2)) cuts.add(1 + Math.floor(rand() * (full.length - 2)));
    for (const cut of [...cuts].sort((a, b) => a - b)) {
      list.post(`truncated at ${cut} ${path}`, path, full.slice(0, cut), BAD);
    }
    // Top-level non-objects.
    for (const v of [null, 5, "x", [valid], true]) {
      list.postJson(`top-level ${JSON.stringify(v)} ${path}`, path, v, BAD);
    }
    // Unknown fields are ignored, as OpenAI clients send vendor extras.
    list.postJson(`unknown fields ${path}`, path, { ...valid, zz_unknown: { deep: [1, 2] }, another: null }, [
      200,
    ]);
    // Wrong types and bad values per field.
    for (const [field, values] of Object.entries(BAD_VALUES[path] ?? {})) {
      for (const v of values) {
        list.postJson(`${path} ${field}=${JSON.stringify(v)}`, path, setPath(valid, field, v), BAD);
      }
    }
    for (const field of Object.keys(valid)) {
      for (const v of WRONG_TYPES) {
        const ok = typeCaseMayPass(path, field, v, valid[field]);
        list.postJson(
          `${path} ${field} as ${JSON.stringify(v)}`,
          path,
          setPath(valid, field, v),
          ok ? OK_OR_BAD : BAD,
        );
      }
    }
    // Invalid UTF-8 inside a string value.
    const enc = new TextEncoder().encode(full);
    for (const bad of [[0xff], [0xc3], [0xed, 0xa0, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80], [0xc0, 0xaf]]) {
      const at = full.indexOf('"', 2) + 1;
      const bytes = new Uint8Array([...enc.slice(0, at), ...bad, ...enc.slice(at)]);
      list.post(`invalid utf-8 ${bad.map((b) => b.toString(16)).join(" ")} ${path}`, path, bytes, BAD);
    }
  }
}

function setPath(body: Record<string, unknown>, path: string, value: unknown): Record<string, unknown> {
  const copy = structuredClone(body);
  const keys = path.split(".");
  let at = copy as Record<string, unknown>;
  for (const k of keys.slice(0, -1)) {
    if (at[k] === undefined || at[k] === null || typeof at[k] !== "object") at[k] = {};
    at = at[k] as Record<string, unknown>;
  }
  at[keys[keys.length - 1]] = value;
  return copy;
}

/** Whether putting `v` in place of `field` may be fine (e.g. a number where a number was). */
function typeCaseMayPass(path: string, field: string, v: unknown, original: unknown): boolean {
  if (typeof v === typeof original && Array.isArray(v) === Array.isArray(original)) return true;
  // Lists of strings/ids are valid prompts; tokens [1] is a valid id list; an empty sampling_params object is fine.
  if (path === "/generate" && field === "sampling_params" && typeof v === "object" && !Array.isArray(v)) {
    return true;
  }
  if (path === "/generate" && field === "text" && Array.isArray(v)) return false;
  if ((path === "/v1/completions" && field === "prompt") && JSON.stringify(v) === "[1]") return true;
  if ((path.endsWith("detokenize") && field === "tokens") && JSON.stringify(v) === "[1]") return true;
  if (path === "/abort_request") return true;
  if (path.endsWith("/tokenize") && field === "prompt" && Array.isArray(v) && v.length === 0) return true;
  return false;
}

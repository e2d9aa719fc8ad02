/** One hostile request, what answers are right, and the list the generators append to. */

export interface HostileCase {
  name: string;
  method: string;
  path: string;
  body?: string | Uint8Array;
  headers?: Record<string, string>;
  /** Statuses that are a correct answer. */
  expect: number[];
}

export interface CaseLimits {
  contextLen: number;
  vocabSize: number;
  maxBodyBytes: number;
}

export const BAD = [400];
/** Accepted as valid, or refused as a bad request: both are documented answers, a 5xx never is. */
export const OK_OR_BAD = [200, 400];

const JSON_HEADERS = { "content-type": "application/json" };

/** The cases in the order they are added. */
export class CaseList {
  readonly cases: HostileCase[] = [];

  /** A POST with a raw body (JSON content-type unless told otherwise). */
  post(
    name: string,
    path: string,
    body: string | Uint8Array,
    expect: number[],
    headers: Record<string, string> = JSON_HEADERS,
  ) {
    this.cases.push({ name, method: "POST", path, body, expect, headers });
  }

  /** A POST of `value` as JSON. */
  postJson(name: string, path: string, value: unknown, expect: number[]) {
    this.post(name, path, JSON.stringify(value), expect);
  }

  /** A request with no body. */
  request(name: string, method: string, path: string, expect: number[]) {
    this.cases.push({ name, method, path, expect });
  }
}

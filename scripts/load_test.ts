/**
 * Load with dropped clients, for a fixed time, on loopback:
 *   deno run -A scripts/load_test.ts [--minutes 2] [--concurrency 200] [--url http://127.0.0.1:30000]
 * Without --url it starts its own server on stories260K with small running/queue limits, so the queue limit is
 * reached and must be answered with 503. Many streaming and non-streaming clients, a third of them disconnecting
 * at a random point; every request that finishes must equal its solo greedy output. At the end: zero 5xx, zero
 * timeouts, nothing live, no KV held, all slots free after a flush, resident memory after warm-up vs at the end.
 * Exit code 0 when every check holds.
 */
import { residentBytes, startServer } from "../tests/real_server.ts";

export interface LoadOptions {
  seconds: number;
  concurrency: number;
  url?: string;
  modelPath?: string;
  seed?: number;
  /** Fraction of clients that disconnect at a random point. */
  dropFraction?: number;
  /** A request not answered within this is a timeout (a failure). */
  requestTimeoutMs?: number;
  log?: (line: string) => void;
}

export interface LoadReport {
  seconds: number;
  concurrency: number;
  requests: number;
  completed: number;
  streamed: number;
  disconnects: number;
  busy503: number;
  server5xx: number;
  other4xx: number;
  timeouts: number;
  mismatches: number;
  /** Failures no other counter explains (a reset connection, a malformed stream). */
  clientErrors: number;
  errors: string[];
  rssWarmBytes: number | null;
  rssEndBytes: number | null;
  liveAtEnd: number;
  heldSlotsAtEnd: number;
  freeAfterFlush: number;
  totalSlots: number;
  integrityOk: boolean;
  ok: boolean;
}

type Kind = "generate" | "generate-stream" | "completions" | "completions-stream";
const KINDS: Kind[] = ["generate", "generate-stream", "completions", "completions-stream"];

const SUBJECTS = [
  "a little dog",
  "Lily",
  "a big red ball",
  "Tom and his mom",
  "a tiny bird",
  "the sun",
  "a cat",
];
const ACTIONS = [
  "went to the park",
  "was very sad",
  "found a box",
  "wanted to play",
  "saw a tree",
  "liked to run",
];

function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Prompt {
  text: string;
  maxTokens: number;
}

function prompts(n: number): Prompt[] {
  return Array.from({ length: n }, (_, i) => ({
    text: `Once upon a time, ${SUBJECTS[i % SUBJECTS.length]} ${ACTIONS[(i * 5) % ACTIONS.length]}.`,
    maxTokens: 16 + (i * 13) % 48,
  }));
}

function requestFor(kind: Kind, p: Prompt): { path: string; body: unknown } {
  const stream = kind.endsWith("-stream");
  if (kind.startsWith("generate")) {
    return {
      path: "/generate",
      body: { text: p.text, stream, sampling_params: { temperature: 0, max_new_tokens: p.maxTokens } },
    };
  }
  return {
    path: "/v1/completions",
    body: { prompt: p.text, max_tokens: p.maxTokens, temperature: 0, stream },
  };
}

/** The final text of a response, streamed or not, or an error status. */
async function readAnswer(kind: Kind, res: Response): Promise<string> {
  if (!kind.endsWith("-stream")) {
    const j = await res.json();
    return kind === "generate" ? j.text : j.choices[0].text;
  }
  const text = await res.text();
  let out = "";
  for (const block of text.split("\n\n")) {
    if (!block.startsWith("data: ") || block === "data: [DONE]") continue;
    const j = JSON.parse(block.slice(6));
    if (j.error) throw new Error(`error in stream: ${j.error.message}`);
    if (kind === "generate-stream") out = j.text;
    else out += j.choices?.[0]?.text ?? "";
  }
  return out;
}

async function getJson(url: string): Promise<any> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: ${res.status}`);
  return await res.json();
}

export async function runLoad(opts: LoadOptions): Promise<LoadReport> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const rand = seeded(opts.seed ?? 1);
  const dropFraction = opts.dropFraction ?? 1 / 3;
  const timeoutMs = opts.requestTimeoutMs ?? 120_000;
  const server = opts.url ? null : await startServer([
    "--model-path",
    opts.modelPath ?? new URL("../../shared/models/stories260K", import.meta.url).pathname,
    "--dtype",
    "float32",
    "--max-running-requests",
    "32",
    "--max-queued-requests",
    String(Math.max(8, Math.floor(opts.concurrency / 4))),
    "--log-level",
    "warning",
  ]);
  const url = opts.url ?? server!.url;
  const report: LoadReport = {
    seconds: opts.seconds,
    concurrency: opts.concurrency,
    requests: 0,
    completed: 0,
    streamed: 0,
    disconnects: 0,
    busy503: 0,
    server5xx: 0,
    other4xx: 0,
    timeouts: 0,
    mismatches: 0,
    clientErrors: 0,
    errors: [],
    rssWarmBytes: null,
    rssEndBytes: null,
    liveAtEnd: -1,
    heldSlotsAtEnd: -1,
    freeAfterFlush: -1,
    totalSlots: -1,
    integrityOk: false,
    ok: false,
  };
  const note = (e: string) => report.errors.length < 20 && report.errors.push(e);
  try {
    // Solo references: one request at a time, each kind.
    const set = prompts(24);
    const solo = new Map<string, string>();
    for (const [i, p] of set.entries()) {
      for (const kind of ["generate", "completions"] as Kind[]) {
        const { path, body } = requestFor(kind, p);
        const res = await fetch(`${url}${path}`, { method: "POST", body: JSON.stringify(body) });
        if (res.status !== 200) throw new Error(`solo ${kind} #${i}: ${res.status} ${await res.text()}`);
        solo.set(`${kind}:${i}`, await readAnswer(kind, res));
      }
    }
    const started = performance.now();
    const deadline = started + opts.seconds * 1000;
    const warmAt = started + Math.min(opts.seconds * 1000 * 0.2, 30_000);
    const rssTimer = server
      ? setTimeout(() => (report.rssWarmBytes = residentBytes(server.pid)), warmAt - performance.now())
      : null;

    const client = async () => {
      while (performance.now() < deadline) {
        const i = Math.floor(rand() * set.length);
        const kind = KINDS[Math.floor(rand() * KINDS.length)];
        const drop = rand() < dropFraction;
        const dropAfterMs = rand() * 400;
        const { path, body } = requestFor(kind, set[i]);
        const ctrl = new AbortController();
        let timedOut = false;
        const timer = setTimeout(() => {
          timedOut = true;
          ctrl.abort();
        }, timeoutMs);
        const dropTimer = drop ? setTimeout(() => ctrl.abort(), dropAfterMs) : null;
        report.requests++;
        try {
          const res = await fetch(`${url}${path}`, {
            method: "POST",
            body: JSON.stringify(body),
            signal: ctrl.signal,
          });
          if (res.status === 503) {
            report.busy503++;
            await res.body?.cancel();
            // A refused client backs off a little, as a real one would.
            await new Promise((r) => setTimeout(r, 20 + rand() * 80));
            continue;
          }
          if (res.status >= 500) {
            report.server5xx++;
            note(`${kind}: ${res.status} ${await res.text()}`);
            continue;
          }
          if (res.status !== 200) {
            report.other4xx++;
            note(`${kind}: ${res.status} ${await res.text()}`);
            continue;
          }
          const text = await readAnswer(kind, res);
          report.completed++;
          if (kind.endsWith("-stream")) report.streamed++;
          const ref = solo.get(`${kind.replace("-stream", "")}:${i}`);
          if (text !== ref) {
            report.mismatches++;
            note(`${kind} #${i}: ${JSON.stringify(text)} != solo ${JSON.stringify(ref)}`);
          }
        } catch (e) {
          if (timedOut) {
            report.timeouts++;
            note(`${kind}: no answer in ${timeoutMs} ms`);
          } else if (ctrl.signal.aborted) report.disconnects++;
          else {
            report.clientErrors++;
            note(`${kind}: ${(e as Error).message}`);
          }
        } finally {
          clearTimeout(timer);
          if (dropTimer !== null) clearTimeout(dropTimer);
        }
      }
    };
    const progress = setInterval(() => {
      log(
        `load: ${((performance.now() - started) / 1000).toFixed(0)} s, ${report.requests} requests, ` +
          `${report.completed} completed, ${report.disconnects} disconnects, ${report.busy503} 503s`,
      );
    }, 15_000);
    await Promise.all(Array.from({ length: opts.concurrency }, client));
    clearInterval(progress);
    if (rssTimer !== null) clearTimeout(rssTimer);

    // Disconnected requests are aborted asynchronously: give the server a moment to settle.
    let info: any = null;
    for (let t = 0; t < 100; t++) {
      info = await getJson(`${url}/get_server_info`);
      const st = info.internal_states[0];
      if (st.num_live_requests === 0 && st.num_running_reqs === 0 && st.num_queue_reqs === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const st = info.internal_states[0];
    report.liveAtEnd = st.num_live_requests + st.num_running_reqs + st.num_queue_reqs;
    report.heldSlotsAtEnd = st.kv_pool.held_slots;
    report.integrityOk = st.kv_pool.integrity_ok;
    if (server) report.rssEndBytes = residentBytes(server.pid);
    const flush = await fetch(`${url}/flush_cache`, { method: "POST" });
    await flush.body?.cancel();
    const pool = (await getJson(`${url}/get_server_info`)).internal_states[0].kv_pool;
    report.freeAfterFlush = pool.free_slots;
    report.totalSlots = pool.total_slots;
  } finally {
    await server?.stop();
  }
  report.ok = report.server5xx === 0 && report.timeouts === 0 && report.mismatches === 0 &&
    report.other4xx === 0 &&
    report.liveAtEnd === 0 && report.heldSlotsAtEnd === 0 && report.integrityOk &&
    report.freeAfterFlush === report.totalSlots && report.completed > 0 && report.clientErrors === 0;
  return report;
}

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
}

if (import.meta.main) {
  const args = Deno.args;
  const report = await runLoad({
    seconds: Number(flag(args, "minutes") ?? "0.5") * 60,
    concurrency: Number(flag(args, "concurrency") ?? "200"),
    url: flag(args, "url"),
    modelPath: flag(args, "model-path"),
    seed: Number(flag(args, "seed") ?? "1"),
  });
  const mib = (b: number | null) => (b === null ? "n/a" : `${(b / 2 ** 20).toFixed(1)} MiB`);
  console.log(JSON.stringify(report, null, 2));
  console.log(
    `load ${
      report.ok ? "PASSED" : "FAILED"
    }: ${report.requests} requests over ${report.seconds} s at concurrency ` +
      `${report.concurrency}: ${report.completed} completed (${report.streamed} streamed), ${report.disconnects} ` +
      `disconnects, ${report.busy503} answered 503 (queue full), ${report.server5xx} 5xx, ${report.timeouts} timeouts, ` +
      `${report.mismatches} outputs differing from solo; RSS after warm-up ${
        mib(report.rssWarmBytes)
      }, at the end ` +
      `${mib(report.rssEndBytes)}; KV held at the end ${report.heldSlotsAtEnd}, free after flush ` +
      `${report.freeAfterFlush}/${report.totalSlots}`,
  );
  Deno.exit(report.ok ? 0 : 1);
}

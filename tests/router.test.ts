// Data-parallel scale-out behind SGLang's router (PyPI `sglang-router`, installed into .venv-router/ by the test).
// Two clusters run the same scenario: three mock workers (tests/router/mock_worker.ts, which log every call the
// router makes) and three real workers (./scripts/llm-server with tiny-random-llama-3.1). The scenario:
// the quick-start's answers through the router equal one worker's; cache_aware keeps a shared prefix on one
// worker (cached_tokens); a worker killed with SIGKILL mid-run is dropped with no lost request it never got;
// the restarted worker rejoins and serves again.

import { deepStrictEqual, ok } from "node:assert/strict";
import {
  Child,
  ensureRouterInstalled,
  freePort,
  postJson,
  ROOT,
  Router,
  Worker,
  type WorkerKind,
} from "./router/cluster.ts";

// JSR is out of reach from CI, so the assertions come from Deno's built-in node:assert.
function assert(condition: unknown, message?: string): asserts condition {
  ok(condition, message);
}
function assertEquals<T>(actual: T, expected: T, message?: string) {
  deepStrictEqual(actual, expected, message);
}

const MODELS_DIR = Deno.env.get("LLM_MODELS_DIR") ?? `${ROOT}/../shared/models`;
const MODEL = `${MODELS_DIR}/tiny-random-llama-3.1`;
const IN_CI = ["1", "true", "yes"].includes((Deno.env.get("CI") ?? "").toLowerCase());

type Cluster = { workers: Worker[]; router: Router };

async function startCluster(spec: WorkerKind, startupMs: number): Promise<Cluster> {
  await ensureRouterInstalled();
  const workers: Worker[] = [];
  for (let i = 0; i < 3; i++) workers.push(new Worker(await freePort(), spec));
  // The first worker alone first: a real one may still have to build the engine, and three builds would race.
  workers[0].start();
  await workers[0].waitHealthy(startupMs);
  for (const w of workers.slice(1)) w.start();
  await Promise.all(workers.slice(1).map((w) => w.waitHealthy(startupMs)));
  const router = new Router(await freePort(), workers, "cache_aware");
  router.start();
  await router.waitFor(workers, [], 30_000);
  return { workers, router };
}

async function stopCluster(c: Cluster) {
  const children: (Child | undefined)[] = [c.router.child, ...c.workers.map((w) => w.child)];
  await Promise.all(children.map((ch) => ch?.stop()));
}

// The two requests of SGLang's quick-start, made deterministic (temperature 0) so two servers can be compared.
const QUICKSTART = {
  chat: {
    model: "default",
    messages: [{ role: "user", content: "What is the capital of France?" }],
    temperature: 0,
    max_tokens: 32,
  },
  generate: { text: "The capital of France is", sampling_params: { temperature: 0, max_new_tokens: 32 } },
};

async function checkQuickstartMatchesOneWorker(c: Cluster) {
  const alone = c.workers[0].url;
  for (const base of [c.router.url, alone]) {
    // Warm both paths once so neither comparison sees a cold first request.
    await postJson(base, "/generate", QUICKSTART.generate);
  }
  const viaRouterChat = await postJson(c.router.url, "/v1/chat/completions", QUICKSTART.chat);
  const aloneChat = await postJson(alone, "/v1/chat/completions", QUICKSTART.chat);
  assertEquals(viaRouterChat.status, 200, JSON.stringify(viaRouterChat.json));
  assertEquals(aloneChat.status, 200, JSON.stringify(aloneChat.json));
  const chatView = (j: any) => ({
    content: j.choices[0].message.content,
    finish_reason: j.choices[0].finish_reason,
    prompt_tokens: j.usage.prompt_tokens,
    completion_tokens: j.usage.completion_tokens,
  });
  assertEquals(chatView(viaRouterChat.json), chatView(aloneChat.json));
  assert(viaRouterChat.json.choices[0].message.content.length > 0, "empty chat answer");

  const viaRouterGen = await postJson(c.router.url, "/generate", QUICKSTART.generate);
  const aloneGen = await postJson(alone, "/generate", QUICKSTART.generate);
  assertEquals(viaRouterGen.status, 200, JSON.stringify(viaRouterGen.json));
  assertEquals(aloneGen.status, 200, JSON.stringify(aloneGen.json));
  const genView = (j: any) => ({
    text: j.text,
    output_ids: j.output_ids,
    finish_reason: j.meta_info.finish_reason,
    prompt_tokens: j.meta_info.prompt_tokens,
  });
  assertEquals(genView(viaRouterGen.json), genView(aloneGen.json));
}

function longPrefix(seed: string): string {
  const words = [
    "river",
    "lantern",
    "copper",
    "meadow",
    "orbit",
    "saffron",
    "glacier",
    "harbor",
    "velvet",
    "ember",
  ];
  const out: string[] = [];
  for (let i = 0; i < 120; i++) out.push(words[(i * 7 + seed.charCodeAt(i % seed.length)) % words.length]);
  return `Story ${seed}: ${out.join(" ")}.`;
}

/** Returns, per prefix group, the rids sent, after asserting every follow-up request hit a warm cache. */
async function checkCacheAwareAffinity(c: Cluster, runTag: string): Promise<string[][]> {
  const flushed = await fetch(`${c.router.url}/flush_cache`, { method: "POST" });
  assertEquals(flushed.status, 200, await flushed.text());
  const groups: string[][] = [];
  for (const seed of ["alpha", "bravo", "charlie"]) {
    const prefix = longPrefix(`${seed}-${runTag}`);
    const rids: string[] = [];
    for (let j = 0; j < 4; j++) {
      const rid = `affinity-${seed}-${runTag}-${j}`;
      rids.push(rid);
      const r = await postJson(c.router.url, "/generate", {
        text: `${prefix} Question ${j}: what happens next?`,
        rid,
        sampling_params: { temperature: 0, max_new_tokens: 4 },
      });
      assertEquals(r.status, 200, JSON.stringify(r.json));
      const { cached_tokens, prompt_tokens } = r.json.meta_info;
      if (j > 0) {
        // Only the worker that served the earlier requests of this group can have the prefix cached.
        assert(
          cached_tokens >= 0.6 * prompt_tokens,
          `request ${j} of group ${seed}: cached_tokens ${cached_tokens} of ${prompt_tokens}; the prefix went elsewhere`,
        );
      }
    }
    groups.push(rids);
  }
  return groups;
}

type Outcome = { rid: string; status: number | string; start: number; end: number };

/** Sends `total` /generate requests, `concurrency` at a time; calls `onProgress(doneCount)` after each. */
async function runLoad(
  c: Cluster,
  total: number,
  concurrency: number,
  maxNewTokens: number,
  onProgress: (done: number) => void,
): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  let next = 0;
  const lane = async () => {
    while (next < total) {
      const i = next++;
      const rid = `load-${i}-${crypto.randomUUID().slice(0, 8)}`;
      const start = Date.now();
      let status: number | string;
      try {
        const r = await postJson(c.router.url, "/generate", {
          text: `${rid} asks: please say hello to number ${i}`,
          rid,
          sampling_params: { temperature: 0, max_new_tokens: maxNewTokens, ignore_eos: true },
        });
        status = r.status === 200 && typeof r.json?.text === "string"
          ? 200
          : `${r.status} ${JSON.stringify(r.json)}`;
      } catch (e) {
        status = String(e);
      }
      outcomes.push({ rid, status, start, end: Date.now() });
      onProgress(outcomes.length);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
  return outcomes;
}

/** Kills worker 1 mid-run; every failed request must be one the dead worker had already received. */
async function checkKillDuringRun(c: Cluster, maxNewTokens: number) {
  const victim = c.workers[1];
  let killedAt = 0;
  let victimOutputAtKill = "";
  const outcomes = await runLoad(c, 45, 6, maxNewTokens, (done) => {
    if (done === 12 && killedAt === 0) {
      killedAt = Date.now();
      victim.child!.kill("SIGKILL");
      victimOutputAtKill = victim.child!.output;
    }
  });
  assert(killedAt > 0, "the kill never happened");
  await victim.child!.done;
  const failed = outcomes.filter((o) => o.status !== 200);
  const inFlightAtKill = outcomes.filter((o) => o.start <= killedAt && o.end >= killedAt);
  const victimLog = victim.child!.output;
  for (const f of failed) {
    assert(
      f.start <= killedAt && victimLog.includes(f.rid),
      `request ${f.rid} failed (${f.status}) but had not reached the killed worker`,
    );
  }
  assert(
    failed.length <= inFlightAtKill.length,
    `${failed.length} failures, ${inFlightAtKill.length} in flight`,
  );
  assertEquals(outcomes.length, 45);
  console.log(
    `kill mid-run: 45 requests, ${inFlightAtKill.length} in flight at the kill, ${failed.length} failed`,
  );
  await c.router.waitFor([c.workers[0], c.workers[2]], [victim], 10_000);
  return { failed: failed.length, inFlightAtKill: inFlightAtKill.length, victimOutputAtKill };
}

/** Restarts worker 1 on its port and waits until the router sends it traffic again. */
async function checkRejoin(c: Cluster, servedSince: (w: Worker, mark: number) => number) {
  const victim = c.workers[1];
  victim.start();
  await victim.waitHealthy(120_000);
  await c.router.waitFor(c.workers, [], 15_000);
  const mark = victim.child!.output.length;
  const deadline = Date.now() + 20_000;
  while (servedSince(victim, mark) === 0) {
    assert(Date.now() < deadline, "the restarted worker got no traffic from the router within 20 s");
    // Concurrent probes with unrelated prompts: the router breaks load ties by worker order, so only
    // overlapping requests reach the later workers.
    const burst = Array.from({ length: 6 }, () =>
      postJson(c.router.url, "/generate", {
        text: `${crypto.randomUUID()} rejoin probe`,
        sampling_params: { temperature: 0, max_new_tokens: 2 },
      }));
    for (const r of await Promise.all(burst)) assertEquals(r.status, 200, JSON.stringify(r.json));
  }
}

const mockGenerates = (w: Worker, mark: number) =>
  w.child!.output.slice(mark).split("\n").filter((l) => l.includes('"path":"/generate"')).length;

Deno.test({
  name: "router: mock workers receive SGLang's calls and the cluster survives a SIGKILL",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const c = await startCluster({ kind: "mock", delayMs: 150 }, 15_000);
    try {
      await t.step("registration: /health, /server_info, /model_info on every worker", () => {
        for (const w of c.workers) {
          const seen = new Set(w.mockRequests().map((r) => `${r.method} ${r.path}`));
          for (const call of ["GET /health", "GET /server_info", "GET /model_info"]) {
            assert(seen.has(call), `${w.url} never got ${call}; got ${[...seen].join(", ")}`);
          }
        }
      });
      await t.step(
        "quick-start through the router equals one worker alone",
        () => checkQuickstartMatchesOneWorker(c),
      );
      await t.step(
        "router forwards /flush_cache, /get_loads → /get_load, /engine_metrics → /metrics",
        async () => {
          const marks = c.workers.map((w) => w.mockRequests().length);
          assertEquals((await fetch(`${c.router.url}/get_loads`).then((r) => r.json())).workers.length, 3);
          const metrics = await fetch(`${c.router.url}/engine_metrics`).then((r) => r.text());
          assert(
            metrics.includes("sglang_num_running_reqs") || metrics.includes("sglang:num_running_reqs"),
            metrics,
          );
          const flushed = await fetch(`${c.router.url}/flush_cache`, { method: "POST" });
          assertEquals(flushed.status, 200, await flushed.text());
          c.workers.forEach((w, i) => {
            const calls = w.mockRequests().slice(marks[i]).map((r) => `${r.method} ${r.path}`);
            for (const call of ["GET /get_load", "GET /metrics", "POST /flush_cache"]) {
              assert(calls.includes(call), `${w.url} never got ${call}; got ${calls.join(", ")}`);
            }
          });
        },
      );
      await t.step("cache_aware keeps each shared prefix on one worker", async () => {
        const groups = await checkCacheAwareAffinity(c, "mock");
        const servedBy = (rid: string) =>
          c.workers.filter((w) => w.mockRequests().some((r) => r.rid === rid));
        for (const rids of groups) {
          const owners = new Set(rids.flatMap((rid) => servedBy(rid).map((w) => w.port)));
          assertEquals(owners.size, 1, `group ${rids[0]} was served by ${[...owners]}`);
        }
      });
      await t.step("SIGKILL mid-run: no failed request that had not reached the dead worker", async () => {
        const before = c.workers[1].mockRequests().filter((r) => r.path === "/generate").length;
        const { victimOutputAtKill } = await checkKillDuringRun(c, 8);
        const servedBeforeKill = victimOutputAtKill.split("\n").filter((l) =>
          l.includes('"path":"/generate"')
        ).length;
        assert(
          servedBeforeKill > before,
          "the killed worker had received none of the run: the kill was not mid-run",
        );
      });
      await t.step("the restarted worker rejoins", () => checkRejoin(c, mockGenerates));
    } finally {
      await stopCluster(c);
    }
  },
});

// The real server: runs once ./scripts/llm-server can serve (main.ts present). In CI its absence is a failure.
const serverPresent = await Deno.stat(`${ROOT}/main.ts`).then(() => true, () => false);
const modelPresent = await Deno.stat(`${MODEL}/config.json`).then(() => true, () => false);

const prefillLines = (w: Worker, mark: number) =>
  w.child!.output.slice(mark).split("\n").filter((l) => l.includes("Prefill batch")).length;

Deno.test({
  name: "router: three real workers (tiny-random-llama-3.1) behind sglang-router",
  ignore: !IN_CI && !(serverPresent && modelPresent),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    assert(serverPresent, `${ROOT}/main.ts is missing: ./scripts/llm-server cannot start a worker`);
    assert(modelPresent, `model fixture missing at ${MODEL} (set LLM_MODELS_DIR)`);
    const c = await startCluster({ kind: "real", modelPath: MODEL }, 120_000);
    try {
      await t.step(
        "quick-start through the router equals one worker alone",
        () => checkQuickstartMatchesOneWorker(c),
      );
      await t.step("cache_aware: a shared prefix is served from one worker's cache", async () => {
        await checkCacheAwareAffinity(c, "real");
      });
      await t.step("SIGKILL mid-run: no failed request that had not reached the dead worker", async () => {
        await checkKillDuringRun(c, 24);
      });
      await t.step("the restarted worker rejoins", () => checkRejoin(c, prefillLines));
    } finally {
      await stopCluster(c);
    }
  },
});

// A loopback cluster for the router tests: N worker processes (mock or real) behind one sglang-router.
// Keeps each child's output in memory so a test can read what every worker received.

export const ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");
const DENO = Deno.execPath();

export type WorkerKind = { kind: "mock"; delayMs: number } | { kind: "real"; modelPath: string };

export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

export function sleep(ms: number) {
  return new Promise((r) => setTimeout(r, ms));
}

/** A child process whose stdout and stderr are collected into `output`. */
export class Child {
  output = "";
  readonly process: Deno.ChildProcess;
  readonly done: Promise<Deno.CommandStatus>;

  constructor(readonly name: string, cmd: string, args: string[], env: Record<string, string> = {}) {
    this.process = new Deno.Command(cmd, {
      args,
      cwd: ROOT,
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const drain = async (stream: ReadableStream<Uint8Array>) => {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) this.output += chunk;
    };
    const drained = Promise.all([drain(this.process.stdout), drain(this.process.stderr)]);
    this.done = drained.then(() => this.process.status);
  }

  kill(signal: Deno.Signal = "SIGTERM") {
    try {
      this.process.kill(signal);
    } catch {
      // already exited
    }
  }

  async stop() {
    this.kill("SIGTERM");
    const timer = setTimeout(() => this.kill("SIGKILL"), 5000);
    await this.done;
    clearTimeout(timer);
  }
}

export class Worker {
  child?: Child;
  /** Output of earlier incarnations of this worker (before a kill). */
  history = "";
  constructor(readonly port: number, readonly spec: WorkerKind) {}

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  start() {
    if (this.child) this.history += this.child.output;
    if (this.spec.kind === "mock") {
      this.child = new Child(`mock:${this.port}`, DENO, [
        "run",
        "--allow-net",
        "tests/router/mock_worker.ts",
        "--port",
        String(this.port),
        "--delay-ms",
        String(this.spec.delayMs),
      ]);
    } else {
      this.child = new Child(`worker:${this.port}`, `${ROOT}/scripts/llm-server`, [
        "--model-path",
        this.spec.modelPath,
        "--host",
        "127.0.0.1",
        "--port",
        String(this.port),
        "--log-requests",
      ]);
    }
  }

  /** Every request the mock logged, across restarts. */
  mockRequests(): { method: string; path: string; rid: string | null }[] {
    return (this.history + (this.child?.output ?? "")).split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l))
      .filter((e) => e.event === "request");
  }

  async waitHealthy(timeoutMs: number) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      try {
        const r = await fetch(`${this.url}/health`);
        await r.body?.cancel();
        if (r.ok) return;
      } catch {
        // not listening yet
      }
      await sleep(200);
    }
    throw new Error(
      `worker ${this.url} not healthy after ${timeoutMs} ms:\n${this.child?.output.slice(-2000)}`,
    );
  }
}

export type RouterWorkerState = { url: string; is_healthy: boolean };

export class Router {
  child?: Child;
  constructor(readonly port: number, readonly workers: Worker[], readonly policy: string) {}

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  start() {
    // Short health and circuit-breaker periods so a killed worker drops out and a restarted one
    // comes back within seconds instead of the defaults (60 s each).
    this.child = new Child("router", `${ROOT}/.venv-router/bin/python`, [
      "-m",
      "sglang_router.launch_router",
      "--host",
      "127.0.0.1",
      "--port",
      String(this.port),
      "--policy",
      this.policy,
      "--worker-urls",
      ...this.workers.map((w) => w.url),
      "--health-check-interval-secs",
      "1",
      "--health-failure-threshold",
      "1",
      "--health-success-threshold",
      "1",
      "--cb-timeout-duration-secs",
      "2",
      "--worker-startup-check-interval",
      "1",
      "--log-level",
      "warn",
    ], { NO_COLOR: "1", RUST_LOG_STYLE: "never" });
  }

  async workerStates(): Promise<RouterWorkerState[]> {
    const r = await fetch(`${this.url}/workers`);
    if (!r.ok) throw new Error(`GET /workers: ${r.status} ${await r.text()}`);
    return (await r.json()).workers;
  }

  /** Waits until the router lists exactly these workers with the given health. */
  async waitFor(healthy: Worker[], unhealthy: Worker[], timeoutMs: number) {
    const deadline = Date.now() + timeoutMs;
    let last = "";
    while (Date.now() < deadline) {
      try {
        const states = await this.workerStates();
        last = JSON.stringify(states.map((s) => [s.url, s.is_healthy]));
        const health = new Map(states.map((s) => [s.url, s.is_healthy]));
        if (
          healthy.every((w) => health.get(w.url) === true) &&
          unhealthy.every((w) => health.get(w.url) === false)
        ) return;
      } catch (e) {
        last = String(e);
      }
      await sleep(250);
    }
    throw new Error(
      `router state not reached in ${timeoutMs} ms; last: ${last}\n${this.child?.output.slice(-3000)}`,
    );
  }
}

/** Installs sglang-router into .venv-router (idempotent); throws with the installer's output when it cannot. */
export async function ensureRouterInstalled() {
  const out = await new Deno.Command("bash", {
    args: ["-c", `source "${ROOT}/scripts/lib/router_env.sh" && ensure_router`],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`could not install sglang-router:\n${new TextDecoder().decode(out.stderr)}`);
  }
}

export async function postJson(
  base: string,
  path: string,
  body: unknown,
): Promise<{ status: number; json: any }> {
  const r = await fetch(`${base}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await r.text();
  let json: any = text;
  try {
    json = JSON.parse(text);
  } catch {
    // keep the text
  }
  return { status: r.status, json };
}

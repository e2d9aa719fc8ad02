/**
 * The server as a child process (main.ts over the built engine library, or a fixture script) for the tests
 * and benchmarks that need the whole stack: scheduler, KV pool, radix cache, logs, signals, exit codes.
 */
import { REPO_ROOT } from "./helpers.ts";

export const ENGINE_LIB = Deno.env.get("LLM_ENGINE_LIB") || `${REPO_ROOT}/target/release/libllm_engine.so`;
export const HAVE_ENGINE = await Deno.stat(ENGINE_LIB).then(() => true, () => false);

const READY_LINE = "The server is fired up and ready to roll!";

export interface ServerProcess {
  url: string;
  port: number;
  pid: number;
  /** Everything the process printed so far (stdout and stderr interleaved). */
  log(): string;
  /** SIGTERM (once), wait for the exit; returns the whole log. */
  stop(): Promise<string>;
  signal(sig: Deno.Signal): void;
  status: Promise<Deno.CommandStatus>;
  /** Resolves once the process ended and its output is fully read. */
  exited: Promise<{ code: number; signal: Deno.Signal | null; output: string }>;
}

export interface SpawnOptions {
  /** The script to run instead of main.ts (a fixture server). */
  script?: string;
  env?: Record<string, string>;
  /** 0: the server picks its port, read from its "Listening on" line once ready. Default: a free port. */
  port?: number;
  /** How long start-up may take before the process is killed and the start fails. */
  readyTimeoutMs?: number;
}

export function freePort(): number {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  return port;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Spawns the server with `args` (plus --port) and returns at once, without waiting for it to be ready. */
export function spawnServer(args: string[], options: SpawnOptions = {}): ServerProcess {
  const port = options.port ?? freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", options.script ?? `${REPO_ROOT}/main.ts`, "--port", String(port), ...args],
    env: { LLM_ENGINE_LIB: ENGINE_LIB, ...options.env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // A filtered or failed run may never reach a test's cleanup: never leave a server behind.
  const killOnUnload = () => {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  };
  globalThis.addEventListener("unload", killOnUnload);
  let text = "";
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) text += chunk;
  };
  const readers = Promise.all([collect(child.stdout), collect(child.stderr)]);
  const exited = child.status.then(async (st) => {
    globalThis.removeEventListener("unload", killOnUnload);
    await readers;
    return { code: st.code, signal: st.signal, output: text };
  });
  const signal = (sig: Deno.Signal) => {
    try {
      child.kill(sig);
    } catch { /* already gone */ }
  };
  let stopped: Promise<string> | null = null;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    pid: child.pid,
    log: () => text,
    stop: () => stopped ??= (signal("SIGTERM"), exited.then((e) => e.output)),
    signal,
    status: child.status,
    exited,
  };
}

/**
 * Runs the server with `args` (plus --port); resolves once the ready line is printed (or, with --log-level
 * warning, which hides it, once /health answers 200); rejects with the log if it exits or times out first.
 */
export async function startServer(args: string[], options: SpawnOptions = {}): Promise<ServerProcess> {
  const server = spawnServer(args, options);
  let ended = false;
  server.exited.then(() => (ended = true));
  const readyByHealth = args.includes("warning") && options.port !== 0;
  const healthy = () =>
    fetch(`${server.url}/health`).then(
      async (r) => (await r.body?.cancel(), r.status === 200),
      () => false,
    );
  const deadline = Date.now() + (options.readyTimeoutMs ?? 120_000);
  while (!server.log().includes(READY_LINE)) {
    if (ended || Date.now() > deadline) {
      if (!ended) server.signal("SIGKILL");
      const { output } = await server.exited;
      throw new Error(`server did not start:\n${output.slice(-3000)}`);
    }
    await sleep(50);
    if (readyByHealth && await healthy()) break;
  }
  if (options.port !== 0) return server;
  const listening = /Listening on http:\/\/[^:]+:(\d+)/.exec(server.log())?.[1];
  if (!listening) {
    await server.stop();
    throw new Error(`no listening line in:\n${server.log()}`);
  }
  const port = Number(listening);
  return { ...server, port, url: `http://127.0.0.1:${port}` };
}

/** main.ts on `modelDir`, ready to serve. The ready line needs the server to log at info level (the default). */
export function startRealServer(
  modelDir: string,
  extra: string[] = [],
  options: SpawnOptions = {},
): Promise<ServerProcess> {
  return startServer(["--model-path", modelDir, ...extra], { readyTimeoutMs: 180_000, ...options });
}

/** Runs main.ts to its exit (start-up faults): exit code and the whole output. */
export async function runServerToExit(
  args: string[],
  env: Record<string, string> = {},
  timeoutMs = 60_000,
): Promise<{ code: number; signal: string | null; output: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${REPO_ROOT}/main.ts`, ...args],
    env: { LLM_ENGINE_LIB: ENGINE_LIB, ...env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, timeoutMs);
  const out = await child.output();
  clearTimeout(timer);
  const dec = new TextDecoder();
  return { code: out.code, signal: out.signal, output: dec.decode(out.stdout) + dec.decode(out.stderr) };
}

/** Resident set size of a process in bytes (Linux /proc). */
export function residentBytes(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) * 1024 : NaN;
}

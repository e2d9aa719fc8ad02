/**
 * Starts the real server process (main.ts over the engine library) on a free loopback port and collects its log,
 * for the hostile, fault and load tests.
 */
import { REPO_ROOT } from "../helpers.ts";

export const ENGINE_LIB = Deno.env.get("LLM_ENGINE_LIB") || `${REPO_ROOT}/target/release/libllm_engine.so`;
export const HAVE_ENGINE = await Deno.stat(ENGINE_LIB).then(() => true, () => false);

export interface LiveServer {
  url: string;
  port: number;
  pid: number;
  /** Everything printed so far (stdout and stderr). */
  log(): string;
  /** SIGTERM, wait for the exit, return the whole log. */
  stop(): Promise<string>;
  status: Promise<Deno.CommandStatus>;
}

export function freePort(): number {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  return port;
}

/** Runs main.ts with `args`; resolves once the ready line is printed, rejects (with the log) if it exits first. */
export async function startLiveServer(
  args: string[],
  options: { env?: Record<string, string>; readyTimeoutMs?: number; port?: number } = {},
): Promise<LiveServer> {
  const port = options.port ?? freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${REPO_ROOT}/main.ts`, "--port", String(port), ...args],
    env: { LLM_ENGINE_LIB: ENGINE_LIB, ...options.env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) text += chunk;
  };
  const readers = Promise.all([collect(child.stdout), collect(child.stderr)]);
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
    await child.status;
    await readers;
    return text;
  };
  const deadline = Date.now() + (options.readyTimeoutMs ?? 120_000);
  let exited = false;
  child.status.then(() => (exited = true));
  // The ready line, or (with --log-level warning, which hides it) a healthy /health.
  const healthy = () =>
    fetch(`http://127.0.0.1:${port}/health`).then(
      async (r) => (await r.body?.cancel(), r.status === 200),
      () => false,
    );
  while (!text.includes("The server is fired up and ready to roll!")) {
    if (exited || Date.now() > deadline) {
      const out = await stop();
      throw new Error(`server did not start:\n${out.slice(-3000)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
    if (args.includes("warning") && await healthy()) break;
  }
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    pid: child.pid,
    log: () => text,
    stop,
    status: child.status,
  };
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

/**
 * The real server as a child process (main.ts over the built engine library), for HTTP-level tests
 * and benchmarks that need the whole stack: scheduler, KV pool, radix cache, logs.
 */
import { REPO_ROOT } from "./helpers.ts";

export const ENGINE_LIB = Deno.env.get("LLM_ENGINE_LIB") || `${REPO_ROOT}/target/release/libllm_engine.so`;
export const haveEngineLib = await Deno.stat(ENGINE_LIB).then(() => true, () => false);

export interface RealServer {
  url: string;
  /** Everything the server printed so far (stdout and stderr interleaved). */
  log(): string;
  /** SIGTERM, wait for exit; returns the whole log. */
  stop(): Promise<string>;
}

/** Waits for the "fired up" line, so the server must log at info level (the default). */
export async function startRealServer(modelDir: string, extra: string[] = []): Promise<RealServer> {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${REPO_ROOT}/main.ts`, "--model-path", modelDir, "--port", String(port), ...extra],
    env: { LLM_ENGINE_LIB: ENGINE_LIB },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) text += chunk;
  };
  const readers = Promise.all([collect(child.stdout), collect(child.stderr)]);
  let stopped: Promise<string> | null = null;
  const stop = () => {
    stopped ??= (async () => {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      await child.status;
      await readers;
      return text;
    })();
    return stopped;
  };
  const deadline = Date.now() + 180_000;
  while (!text.includes("The server is fired up and ready to roll!")) {
    const exited = await Promise.race([
      child.status.then(() => true),
      new Promise((r) => setTimeout(() => r(false), 100)),
    ]);
    if (exited || Date.now() > deadline) {
      const out = await stop();
      throw new Error(`server did not start:\n${out.slice(-3000)}`);
    }
  }
  return { url: `http://127.0.0.1:${port}`, log: () => text, stop };
}

import type { ServerContext } from "./context.ts";
import { log } from "./log.ts";
import { isHealthCheck } from "./native/admin.ts";

/** The finish reason message of requests still running when the shutdown timeout ran out. */
export const SHUTDOWN_ABORT_MESSAGE = "server shutting down";

/** Whatever serves HTTP: Deno.HttpServer in main.ts. */
export interface Closable {
  shutdown(): Promise<void>;
}

/**
 * Graceful stop on SIGTERM/SIGINT: refuse new requests (503, /health too, so a router drops this worker),
 * let the running ones finish for up to `timeoutMs`, abort the rest with a clear finish reason, wait for
 * their last bytes to go out, then free the engine. A second signal skips the wait.
 */
export class Shutdown {
  private started: Promise<void> | null = null;
  private hurry: () => void = () => {};

  constructor(
    private readonly ctx: ServerContext,
    private readonly server: Closable,
    private readonly timeoutMs: number,
  ) {}

  get inProgress(): boolean {
    return this.started !== null;
  }

  /** Starts the shutdown (once; later calls hurry it) and resolves when the engine is freed. */
  run(reason: string): Promise<void> {
    if (this.started) {
      log(`Received ${reason} again; aborting the running requests now.`, "warning");
      this.hurry();
      return this.started;
    }
    this.started = this.stop(reason);
    return this.started;
  }

  private async stop(reason: string): Promise<void> {
    const t0 = performance.now();
    this.ctx.stopping = true;
    const running = this.userRequests();
    log(
      `Received ${reason}; refusing new requests, waiting up to ${this.timeoutMs / 1000} s ` +
        `for ${running} running request(s) to finish.`,
    );
    const finishedInTime = await this.waitForIdle();
    const left = [...this.ctx.live.values()];
    if (!finishedInTime && left.length > 0) {
      log(`Aborting ${left.length} request(s) still running: ${SHUTDOWN_ABORT_MESSAGE}.`, "warning");
      for (const live of left) live.abort(SHUTDOWN_ABORT_MESSAGE);
    }
    try {
      // Anything the HTTP layer did not hand in (none expected) must not keep the engine busy.
      this.ctx.engine.abortAll();
    } catch { /* the engine is already stopping */ }
    // The aborted streams still have their last chunk and [DONE] to send; a client that stopped reading
    // must not hold the process, hence the cap.
    await withTimeout(this.server.shutdown(), 5000);
    await this.ctx.engine.close();
    log(`Shutdown complete in ${((performance.now() - t0) / 1000).toFixed(2)} s.`);
  }

  private waitForIdle(): Promise<boolean> {
    return new Promise((resolve) => {
      const deadline = performance.now() + this.timeoutMs;
      let timer: ReturnType<typeof setTimeout>;
      const check = () => {
        if (this.ctx.live.size === 0) return resolve(true);
        if (performance.now() >= deadline) return resolve(false);
        timer = setTimeout(check, 20);
      };
      this.hurry = () => {
        clearTimeout(timer);
        resolve(false);
      };
      check();
    });
  }

  private userRequests(): number {
    let n = 0;
    for (const rid of this.ctx.live.keys()) if (!isHealthCheck(rid)) n++;
    return n;
  }
}

async function withTimeout(p: Promise<void>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([p, new Promise<void>((r) => (timer = setTimeout(r, ms)))]);
  clearTimeout(timer);
}

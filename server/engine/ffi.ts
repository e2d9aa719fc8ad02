/** The only Deno.dlopen: libllm_engine's C ABI as declared in engine-rs/include/engine.h. */

export const Status = {
  OK: 0,
  INVALID_ARGUMENT: 1,
  LOAD: 2,
  NOT_FOUND: 3,
  BUFFER_TOO_SMALL: 4,
  BUSY: 5,
  SHUTDOWN: 6,
  PANIC: 7,
  INTERNAL: 8,
  CAPACITY: 9,
} as const;

export const ABI_VERSION = 1;

const symbols = {
  llm_abi_version: { parameters: [], result: "u32" },
  llm_engine_create: {
    parameters: ["buffer", "usize", "buffer", "buffer", "usize"],
    result: "i32",
    nonblocking: true,
  },
  llm_engine_free: { parameters: ["pointer"], result: "void", nonblocking: true },
  llm_engine_last_error: { parameters: ["pointer", "buffer", "usize"], result: "usize" },
  llm_engine_info: { parameters: ["pointer", "buffer", "usize", "buffer"], result: "i32" },
  llm_engine_submit: { parameters: ["pointer", "buffer", "usize", "buffer"], result: "i32" },
  llm_engine_abort: { parameters: ["pointer", "u64"], result: "i32" },
  llm_engine_abort_all: { parameters: ["pointer"], result: "i32" },
  llm_engine_wait: { parameters: ["pointer", "i32"], result: "i32", nonblocking: true },
  llm_engine_drain: { parameters: ["pointer", "buffer", "usize", "buffer"], result: "i32" },
  llm_engine_stats: { parameters: ["pointer", "buffer", "usize", "buffer"], result: "i32" },
  llm_engine_flush_cache: { parameters: ["pointer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

export type EngineLibrary = Deno.DynamicLibrary<typeof symbols>;

export function openLibrary(path: string): EngineLibrary {
  return Deno.dlopen(path, symbols);
}

/** Default library location, resolved from this file (never from cwd or the loader's search path). */
export function defaultLibraryPath(): string {
  return new URL("../../target/release/libllm_engine.so", import.meta.url).pathname;
}

// What `llm-server --version` reports: the release, the compute build and where it runs.
import { VERSION } from "../version.ts";

export type BuildKind = "CPU" | "CUDA";

/**
 * The compute build of the engine library. The compile script records it in LLM_SERVER_BUILD
 * (the launcher exports it), because the engine's C ABI has no call that reports its features
 * without loading a model.
 */
export function buildKind(env: { get(name: string): string | undefined } = Deno.env): BuildKind {
  return env.get("LLM_SERVER_BUILD")?.trim().toUpperCase() === "CUDA" ? "CUDA" : "CPU";
}

export function versionLine(): string {
  return `llm-server ${VERSION} (build: ${buildKind()}; ${Deno.build.target}; deno ${Deno.version.deno})`;
}

// The per-user folder where the compiled executable unpacks what it carries (same rule as the launcher).
import { VERSION } from "../version.ts";

type Env = { get(name: string): string | undefined };

/** `${XDG_CACHE_HOME:-~/.cache}/llm-server`; null when neither variable gives an absolute path. */
export function cacheRoot(env: Env = Deno.env): string | null {
  const xdg = env.get("XDG_CACHE_HOME");
  if (xdg && xdg.startsWith("/")) return `${xdg}/llm-server`;
  const home = env.get("HOME");
  if (home && home.startsWith("/")) return `${home}/.cache/llm-server`;
  return null;
}

/** `<root>/<version>-<hash>`: a new build never reuses an older build's files. */
export function versionedCacheDir(contentHash: string, env: Env = Deno.env): string | null {
  const root = cacheRoot(env);
  return root === null ? null : `${root}/${VERSION}-${contentHash}`;
}

// For an executable made by `deno compile --include <engine library>` (the DENORT_BIN path of
// scripts/compile.sh): Deno.dlopen needs a real file, so the library embedded in the executable is
// written once to the per-version cache folder and LLM_ENGINE_LIB points the server at it.
// The self-extracting build needs none of this: its launcher sets LLM_ENGINE_LIB itself.
import { versionedCacheDir } from "./cache_dir.ts";

const LIBRARY_NAME = "libllm_engine.so";
// Where compile.sh's `--include target/release/libllm_engine.so` puts it, relative to this module.
const EMBEDDED_LIBRARY = new URL(`../../target/release/${LIBRARY_NAME}`, import.meta.url);

export async function prepareEmbeddedEngineLibrary(): Promise<void> {
  if (!Deno.build.standalone || Deno.env.get("LLM_ENGINE_LIB")) return;
  let bytes: Uint8Array<ArrayBuffer>;
  try {
    bytes = await Deno.readFile(EMBEDDED_LIBRARY);
  } catch (e) {
    throw new Error(`this executable carries no engine library (${EMBEDDED_LIBRARY.pathname}): ${e}`);
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  const hash = Array.from(digest.slice(0, 8), (b) => b.toString(16).padStart(2, "0")).join("");
  const dir = versionedCacheDir(hash);
  if (dir === null) throw new Error("cannot place the engine library: set XDG_CACHE_HOME or HOME");
  const target = `${dir}/${LIBRARY_NAME}`;
  if (!(await isFileOfSize(target, bytes.length))) {
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    // A private temporary name and a rename: two servers starting at once never see a half-written file.
    const temporary = await Deno.makeTempFile({ dir, prefix: `.${LIBRARY_NAME}.` });
    try {
      await Deno.writeFile(temporary, bytes, { mode: 0o500 });
      await Deno.chmod(temporary, 0o500);
      await Deno.rename(temporary, target);
    } catch (e) {
      await Deno.remove(temporary).catch(() => {});
      throw new Error(`cannot write the engine library to ${target}: ${e}`);
    }
  }
  Deno.env.set("LLM_ENGINE_LIB", target);
}

async function isFileOfSize(path: string, size: number): Promise<boolean> {
  try {
    const info = await Deno.stat(path);
    return info.isFile && info.size === size;
  } catch {
    return false;
  }
}

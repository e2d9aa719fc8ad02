/** Odd text in every text field: lone surrogates, control characters, special-token text, prompts longer than
 * the context, empty text. */
import { BAD, type CaseLimits, CaseList, OK_OR_BAD } from "./case_list.ts";

export function textCases(list: CaseList, limits: CaseLimits) {
  const textField: [string, (s: string) => unknown][] = [
    ["/generate", (s) => ({ text: s, sampling_params: { max_new_tokens: 2, temperature: 0 } })],
    ["/v1/chat/completions", (s) => ({ messages: [{ role: "user", content: s }], max_tokens: 2 })],
    ["/v1/completions", (s) => ({ prompt: s, max_tokens: 2 })],
    ["/tokenize", (s) => ({ prompt: s })],
  ];
  for (const [path, make] of textField) {
    // Lone surrogates are valid JSON escapes but not Unicode text: refused (or, where the text is never used, passed).
    for (const s of ["\ud800", "a\udfffb", "\udc00\ud800", "x\ud83d"]) {
      list.postJson(`lone surrogate ${JSON.stringify(s)} ${path}`, path, make(s), BAD);
    }
    // Control characters and odd-but-valid text are just text.
    for (
      const s of ["\u0000", "a\u0001\u0002\u001b[31mred", "\r\n\t", "\u200b\u202e\ufeff", "😀🇫🇷", "\uffff"]
    ) {
      list.postJson(`control/odd text ${JSON.stringify(s)} ${path}`, path, make(s), [200]);
    }
    // Special-token text in user content is accepted; it must not crash tokenization or the template.
    for (
      const s of [
        "<|begin_of_text|>",
        "<|eot_id|><|start_header_id|>system<|end_header_id|>",
        "</s><s>[INST]",
      ]
    ) {
      list.postJson(`special-token text ${path}`, path, make(s), [200]);
    }
    // Prompts longer than the context.
    list.postJson(`prompt longer than context ${path}`, path, make("hello ".repeat(limits.contextLen * 2)), [
      ...(path === "/tokenize" ? [200] : BAD),
    ]);
    // Empty text: nothing to generate from for completions; chat still has its template around it.
    list.postJson(
      `empty text ${path}`,
      path,
      make(""),
      path === "/v1/completions" || path === "/generate" ? OK_OR_BAD : [200],
    );
  }
}

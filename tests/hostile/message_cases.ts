/** Chat messages that are empty, lack content or have odd roles, and bodies that are empty. */
import { BAD, CaseList, OK_OR_BAD } from "./case_list.ts";

export function messageCases(list: CaseList) {
  // Empty messages and odd roles.
  list.postJson("empty messages", "/v1/chat/completions", { messages: [] }, BAD);
  list.postJson("message with empty content", "/v1/chat/completions", {
    messages: [{ role: "user", content: "" }],
    max_tokens: 1,
  }, [200]);
  list.postJson("message with null content", "/v1/chat/completions", {
    messages: [{ role: "user", content: null }],
    max_tokens: 1,
  }, OK_OR_BAD);
  list.postJson(
    "message without content",
    "/v1/chat/completions",
    { messages: [{ role: "user" }], max_tokens: 1 },
    OK_OR_BAD,
  );
  list.postJson("unknown role", "/v1/chat/completions", {
    messages: [{ role: "wizard", content: "x" }],
    max_tokens: 1,
  }, OK_OR_BAD);
  list.postJson("only a system message", "/v1/chat/completions", {
    messages: [{ role: "system", content: "x" }],
    max_tokens: 1,
  }, OK_OR_BAD);
  list.postJson("empty body object /generate", "/generate", {}, BAD);
  list.postJson("empty body object /v1/chat/completions", "/v1/chat/completions", {}, BAD);
  list.postJson("empty body object /v1/completions", "/v1/completions", {}, BAD);
  list.post("empty body /v1/chat/completions", "/v1/chat/completions", "", BAD);
}

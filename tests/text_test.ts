import { assert, assertEquals } from "./assert.ts";
import { ChatTemplate } from "../server/text/chat_template.ts";
import { Detokenizer } from "../server/text/detokenizer.ts";
import { TextTokenizer } from "../server/text/tokenizer.ts";
import { loadTokenizer, STORIES, TINY } from "./helpers.ts";

async function golden(dir: string) {
  return JSON.parse(await Deno.readTextFile(`${dir}/golden.json`)).cases as any[];
}

Deno.test("tiny-random-llama-3.1: tokenizer + chat template reproduce every golden prompt_ids", async () => {
  const tok = await loadTokenizer(TINY);
  const tpl = await ChatTemplate.load(tok);
  const cases = await golden(TINY);
  assert(cases.length >= 5);
  for (const c of cases) {
    const ids = c.kind === "chat" ? tpl.encode(c.messages) : tok.encode(c.text);
    assertEquals(ids, c.prompt_ids, JSON.stringify(c.messages ?? c.text));
    if (c.kind === "chat") assertEquals(tpl.render(c.messages), c.prompt_text);
    assertEquals(tok.decode(c.output_ids), c.output_text);
  }
  assertEquals([...tok.eosTokenIds].sort(), [128001, 128008, 128009]);
});

Deno.test("stories260K: prompts tokenize as golden, no chat template, chat request is a 400", async () => {
  const tok = await loadTokenizer(STORIES);
  for (const c of await golden(STORIES)) {
    assertEquals(tok.encode(c.prompt), c.prompt_ids);
    assertEquals(tok.decode(c.output_ids), c.output_text);
  }
  const tpl = await ChatTemplate.load(tok);
  assertEquals(tpl.available, false);
  try {
    tpl.encode([{ role: "user", content: "hi" }]);
    throw new Error("expected a 400");
  } catch (e: any) {
    assertEquals(e.status, 400);
    assert(e.message.includes("chat template"));
  }
});

Deno.test("tokenizer: remembered one- and two-token decodes keep ids, order and skip_special_tokens apart", async () => {
  const tok = await TextTokenizer.load(TINY);
  const bos = 128000;
  const [a, b] = tok.encode(" Paris is", false);
  for (let round = 0; round < 2; round++) {
    assertEquals(tok.decode([bos], false), "<|begin_of_text|>");
    assertEquals(tok.decode([bos], true), "");
    assertEquals(tok.decode([bos, a], false), "<|begin_of_text|> Paris");
    assertEquals(tok.decode([bos, a], true), " Paris");
    assertEquals(tok.decode([a, b]), " Paris is");
    assertEquals(tok.decode([b, a]), " is Paris");
    assertEquals(tok.decode([a]), " Paris");
  }
});

Deno.test("detokenizer: token-by-token output equals the full decode and never shows U+FFFD", async () => {
  for (const dir of [TINY, STORIES]) {
    const tok = await loadTokenizer(dir);
    const text = 'Say hi in Français, 日本語 and emoji 🙂👋.\nLily\'s mom said, "hi"';
    const ids = tok.encode(text, false);
    const detok = new Detokenizer(tok);
    let streamed = "";
    ids.forEach((id, i) => {
      const step = detok.push([id], i === ids.length - 1);
      assert(!step.delta.includes("\uFFFD"), `U+FFFD after token ${i} in ${dir}`);
      streamed += step.delta;
    });
    assertEquals(streamed, tok.decode(ids));
    assertEquals(detok.text, streamed);
  }
});

Deno.test("detokenizer: stop strings end the text, partial matches are held back, no_stop_trim keeps it", async () => {
  const tok = await loadTokenizer(TINY);
  const ids = tok.encode("The answer is 42. END of story", false);
  for (const noStopTrim of [false, true]) {
    const detok = new Detokenizer(tok, { stop: ["END"], noStopTrim });
    const deltas: string[] = [];
    let matched: string | null = null;
    for (const id of ids) {
      const step = detok.push([id]);
      deltas.push(step.delta);
      if (step.matchedStop) {
        matched = step.matchedStop;
        break;
      }
    }
    assertEquals(matched, "END");
    assertEquals(deltas.join(""), noStopTrim ? "The answer is 42. END" : "The answer is 42. ");
    for (const d of deltas) assert(!d.includes("EN") || noStopTrim);
  }
  // A prefix of the stop string that turns out not to be one is released later, nothing is lost.
  const ids2 = tok.encode("an ENDLESS EN", false);
  const detok2 = new Detokenizer(tok, { stop: ["END!"] });
  let out = "";
  ids2.forEach((id, i) => (out += detok2.push([id], i === ids2.length - 1).delta));
  assertEquals(out, "an ENDLESS EN");
});

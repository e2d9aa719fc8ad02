#!/usr/bin/env python3
"""What HF transformers renders for a GGUF's chat template: the tokenizer transformers builds from the file
(`AutoTokenizer.from_pretrained(gguf_file=...)`, template included) and `apply_chat_template(tokenize=False)`
over multi-turn conversations with and without a system message. Writes the JSON that
tests/gguf_chat_template.test.ts compares our rendering with (llama.cpp's is computed live in that test).

  .venv-golden/bin/pip install transformers gguf sentencepiece protobuf   # torch not needed here
  .venv-golden/bin/python scripts/chat_template_golden.py MODEL.gguf tests/fixtures/smollm2_chat_template_hf.json
"""
import json, os, sys

from transformers import AutoTokenizer

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are a terse assistant."}, {"role": "user", "content": "Hi!"}],
    [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."},
     {"role": "user", "content": "And 3+3?"}],
    [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Name a colour."},
     {"role": "assistant", "content": "Rouge."}, {"role": "user", "content": "Another one, please."}],
    [{"role": "system", "content": "Multi-line\nsystem prompt with \"quotes\" and <tags>."},
     {"role": "user", "content": "Grüße 👋\n\nline two"}, {"role": "assistant", "content": "  spaced  "},
     {"role": "user", "content": "def f(x):\n    return x"}, {"role": "assistant", "content": "A function."},
     {"role": "user", "content": "Thanks"}],
    [{"role": "user", "content": "Tell me a joke."}, {"role": "assistant", "content": "Why did the chicken cross the road?"}],
]


def main():
    path, out = sys.argv[1], sys.argv[2]
    tok = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(path)), gguf_file=os.path.basename(path))
    cases = []
    for messages in CONVERSATIONS:
        add = messages[-1]["role"] != "assistant"
        cases.append({"messages": messages, "add_generation_prompt": add,
                      "rendered": tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add)})
    json.dump({"model": os.path.basename(path), "renderer": f"transformers {__import__('transformers').__version__}",
               "cases": cases}, open(out, "w"), ensure_ascii=False, indent=1)
    print(f"{out}: {len(cases)} conversations")


main()

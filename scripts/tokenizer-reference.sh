#!/usr/bin/env bash
# Regenerate declab's tokenizer reference fixtures from llama.cpp: llama-tokenize (built from the
# llama-cpp-python sdist by scripts/build-llama-cpp.sh) tokenizes every text of
# tests/fixtures/tokenizer/texts.json with each real model's GGUF, as llama-tokenize does by
# default: BOS added when the model asks for it (`tokenizer.ggml.add_bos_token`), special tokens
# parsed in the text. The text is read verbatim from a file (-f) with escape processing off
# (--no-escape), so "\n" in a text stays a newline and a backslash stays a backslash.
# Writes tests/fixtures/tokenizer/<name>.ids.json (text id -> ids, with the llama.cpp commit,
# the model file and its sha256, and the sha256 of texts.json). Never run in CI: the fixtures
# are committed, and tests/tokenizer_reference.rs checks declab's GGUF tokenizers against them.
#   scripts/tokenizer-reference.sh        both real models (after `make models`)
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${DECLAB_MODELS:-models}
BUILD=$(scripts/build-llama-cpp.sh | tail -1)
TOOL=$BUILD/bin/llama-tokenize
COMMIT=0c1e570 # the llama.cpp commit vendored in llama-cpp-python 0.3.36
DIR=tests/fixtures/tokenizer
TEXTS=$DIR/texts.json

one() { # name model-path-under-MODELS
  local name=$1 rel=$2 model=$MODELS/$2 tmp
  [ -f "$model" ] || { echo "tokenizer-reference: no $model; run \`make models\`" >&2; exit 1; }
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/declab-tok.XXXXXX")
  python3 - "$TEXTS" "$tmp" <<'PY'
import json, sys
texts, tmp = sys.argv[1:]
for t in json.load(open(texts, encoding="utf-8")):
    # newline="" writes "\r\n" and "\r" as they are
    with open(f"{tmp}/{t['id']}.txt", "w", encoding="utf-8", newline="") as f:
        f.write(t["text"])
PY
  for f in "$tmp"/*.txt; do
    "$TOOL" -m "$model" -f "$f" --ids --no-escape --log-disable > "${f%.txt}.ids"
  done
  python3 - "$TEXTS" "$tmp" "$rel" "$(sha256sum "$model" | cut -d' ' -f1)" \
    "$(sha256sum "$TEXTS" | cut -d' ' -f1)" "$COMMIT" "$DIR/$name.ids.json" <<'PY'
import json, sys
texts, tmp, rel, model_sha, texts_sha, commit, out = sys.argv[1:]
ids = {}
for t in json.load(open(texts, encoding="utf-8")):
    lines = [l for l in open(f"{tmp}/{t['id']}.ids").read().splitlines() if l.startswith("[")]
    assert len(lines) == 1, (t["id"], lines)
    ids[t["id"]] = json.loads(lines[-1])
head = {
    "reference": f"llama.cpp {commit} (llama-cpp-python 0.3.36 sdist): llama-tokenize -f TEXT --ids --no-escape (BOS as the model asks, special tokens parsed)",
    "model_file": rel,
    "model_sha256": model_sha,
    "texts_sha256": texts_sha,
}
with open(out, "w", encoding="utf-8") as f:
    f.write("{\n")
    for k, v in head.items():
        f.write(f" {json.dumps(k)}: {json.dumps(v)},\n")
    f.write(' "ids": {\n')
    f.write(",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in ids.items()))
    f.write("\n }\n}\n")
print(f"tokenizer-reference: {out} ({len(ids)} texts)")
PY
  rm -rf "$tmp"
}

one gemma3-270m gemma-3-270m/gemma-3-270m-q4_k_m.gguf
one smollm2-135m smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf

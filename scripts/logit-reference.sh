#!/usr/bin/env bash
# Regenerate declab's logit reference fixtures from llama.cpp: for each model, llama.cpp (built
# from the llama-cpp-python sdist by scripts/build-llama-cpp.sh) tokenizes the committed
# sequences (tests/fixtures/reference/sequences.json) with the GGUF's own tokenizer and decodes
# each in one batch with logits at every position (scripts/reference/llama-logits.cpp); the rows
# are compacted into tests/fixtures/reference/<name>.json.gz (scripts/reference/compact.py).
# Never run in CI: the fixtures are committed, and `make test` checks declab against them.
#   scripts/logit-reference.sh                    both real models (after `make models`)
#   scripts/logit-reference.sh MODEL.gguf OUT.json.gz   any GGUF (then: declab check-model)
# LLAMA_LOGITS_ARGS passes options to llama-logits (e.g. "--kv f32 --fa off") for diagnosis;
# NO_SELF=1 skips the second, one-token-per-batch run that measures llama.cpp against itself
# (about 6 minutes for Gemma 3 270M).
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${DECLAB_MODELS:-models}
BUILD=$(scripts/build-llama-cpp.sh | tail -1)
WORK=$(dirname "$BUILD")
SRC=$(ls -d "$WORK"/llama_cpp_python-*/vendor/llama.cpp)
TOOL=$WORK/llama-logits
if [ ! -x "$TOOL" ] || [ scripts/reference/llama-logits.cpp -nt "$TOOL" ]; then
  g++ -O2 -std=c++17 scripts/reference/llama-logits.cpp -I"$SRC/include" -I"$SRC/ggml/include" \
    -L"$BUILD/bin" -lllama -lggml -lggml-base -Wl,-rpath,"$BUILD/bin" -o "$TOOL"
fi
PY=$WORK/venv/bin/python
"$PY" -c "import numpy" 2>/dev/null || "$WORK/venv/bin/pip" install -q numpy
SEQS=tests/fixtures/reference/sequences.json
COMMIT=0c1e570 # the llama.cpp commit vendored in llama-cpp-python 0.3.36

one() { # model.gguf out.json.gz
  local model=$1 out=$2 tmp
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/declab-ref.XXXXXX")
  "$PY" - "$SEQS" "$tmp" <<'PY'
import json, sys
seqs, tmp = sys.argv[1:]
for s in json.load(open(seqs))["sequences"]:
    open(f"{tmp}/{s['id']}.txt", "w").write(s["text"])
PY
  mkdir -p "$tmp/self"
  for f in "$tmp"/*.txt; do
    # shellcheck disable=SC2086
    "$TOOL" "$model" "$f" "${f%.txt}" --threads 2 ${LLAMA_LOGITS_ARGS:-} 2>/dev/null
    # the same ids one token per batch: llama.cpp's agreement with itself (the floor)
    # shellcheck disable=SC2086
    [ -n "${NO_SELF:-}" ] || "$TOOL" "$model" "$f" "$tmp/self/$(basename "${f%.txt}")" --threads 2 \
      --ubatch 1 ${LLAMA_LOGITS_ARGS:-} 2>/dev/null
  done
  printf '{"reference": "llama.cpp %s (llama-cpp-python sdist), CPU, 2 threads, one batch per sequence, default context parameters (f16 KV cache)"}\n' "$COMMIT" > "$tmp/meta.json"
  local self_dir=""
  [ -n "${NO_SELF:-}" ] || self_dir="$tmp/self"
  # shellcheck disable=SC2086
  "$PY" scripts/reference/compact.py "$SEQS" "$tmp" "$model" "$out" $self_dir
  rm -rf "$tmp"
}

if [ $# -eq 2 ]; then
  one "$1" "$2"
else
  one "$MODELS/gemma-3-270m/gemma-3-270m-q4_k_m.gguf" tests/fixtures/reference/gemma3-270m.json.gz
  one "$MODELS/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf" tests/fixtures/reference/smollm2-135m.json.gz
fi

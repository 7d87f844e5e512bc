#!/usr/bin/env bash
# Forward time of two declab binaries side by side (bench/perf-notes.md, "One binary for every
# CPU"): 16 samples x 48 tokens of one prompt decoded as one batch, three alternating runs per
# binary, run as a shard so no statistics are computed; prints each run's forward time summed
# over the samples. Quote the ratio of the two, not the figures: the machine is shared.
#
#   make native && scripts/forward-ab.sh target/native/release/declab target/release/declab
#   scripts/forward-ab.sh A B smollm2        # gemma (default) or smollm2
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 BIN_A BIN_B [gemma|smollm2]" >&2; exit 2; }
a=$(realpath "$1"); b=$(realpath "$2"); model=${3:-gemma}
M=$(realpath "${DECLAB_MODELS:-models}")
case "$model" in
  gemma) spec="{id: gemma3-270m, gguf: $M/gemma-3-270m/gemma-3-270m-q4_k_m.gguf, tokenizer: $M/gemma-3-270m/tokenizer.json}" ;;
  smollm2) spec="{id: smollm2-135m, gguf: $M/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf}" ;;
  *) echo "$0: model is gemma or smollm2, not $model" >&2; exit 2 ;;
esac
work=$(mktemp -d "${TMPDIR:-/tmp}/declab-ab.XXXXXX")
trap 'rm -rf "$work"' EXIT
cat > "$work/ab.yaml" <<YAML
name: ab
seed: 7
models: [$spec]
prompts: [{id: lighthouse, text: "The lighthouse keeper had not seen a ship in eleven years, until one foggy morning"}]
samples: 8
max_new_tokens: 48
strategies: [{kind: greedy}, {kind: temperature, temperature: 1.0}]
YAML
for i in 1 2 3; do
  for bin in "$a" "$b"; do
    rm -rf "$work/out"
    "$bin" run "$work/ab.yaml" --out "$work/out" --shard 0/1 --no-progress >/dev/null 2>&1
    python3 - "$work/out/samples.jsonl" "$bin" <<'PY'
import json, sys
fw = tok = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    fw += sum(r["trace"]["forward_ms"]); tok += len(r["token_ids"])
print(f"{sys.argv[2]}: forward {fw:.0f} ms over {tok} tokens")
PY
  done
done

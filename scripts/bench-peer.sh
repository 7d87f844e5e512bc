#!/usr/bin/env bash
# declab vs llama.cpp on the same GGUF files (Gemma 3 270M Q4_K_M, SmolLM2-135M Q4_1), same
# machine, 2 threads, back to back, as ratios. llama.cpp (CPU only) is built from the
# llama-cpp-python sdist on PyPI in a throwaway folder ($DECLAB_PEER_DIR, default
# /tmp/declab-peer) by scripts/build-llama-cpp.sh.
#
# Per model: prefill at 16 and 512 tokens (llama-bench -p), single-stream decode (llama-bench
# -n 64), batched decode at B = 27 against llama.cpp's own batched decode at the same batch
# (llama-batched-bench -npl 27; declab's figure includes its greedy sampler on every row), load
# time, and peak RSS for a single stream (`time -v` on a 128-token greedy run; declab's peak up
# to its single stream) and for the batch (llama.cpp: `time -v` on its whole run; declab: its peak up to the end of the batch). For Gemma also the sampler: per-row
# latency against llama.cpp's sampling time, and each strategy's share of the per-token time
# inside a batch (`declab bench`). Not part of CI (the llama.cpp build takes ~5 minutes on 2
# cores). Usage: make bench-peer; the table is also written to $WORK/bench-peer.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${DECLAB_PEER_DIR:-/tmp/declab-peer}
MODELS=${DECLAB_MODELS:-models}
VERSION=0.3.36 # as in scripts/build-llama-cpp.sh
THREADS=2
BATCH=27
PROMPT="Once upon a time, in a small village by the sea,"
BIN=$(DECLAB_PEER_DIR=$WORK scripts/build-llama-cpp.sh | tail -1)/bin
export LD_LIBRARY_PATH=$BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
cargo build --release --example decode_speed -q
cargo build --release -q

declare -A FILE=(
  [gemma]=$MODELS/gemma-3-270m/gemma-3-270m-q4_k_m.gguf
  [smollm2]=$MODELS/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf
)
ROWS=$WORK/bench-peer.rows
: > "$ROWS"
row() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >> "$ROWS"; }
num() { awk -v k="$1" -v f="$2" '$0 ~ k {print $f; exit}' "$3"; }

for m in gemma smollm2; do
  f=${FILE[$m]}
  echo "== $m: llama.cpp $VERSION (vendored), $THREADS threads"
  "$BIN/llama-bench" -m "$f" -p 16,512 -n 64 -t $THREADS -r 3 -o csv 2>/dev/null > "$WORK/llama-bench-$m.csv"
  ll() { python3 -c "import csv,sys;r=[x for x in csv.DictReader(open('$WORK/llama-bench-$m.csv')) if x['n_prompt']=='$1' and x['n_gen']=='$2'];print(float(r[0]['avg_ts']))"; }
  LL_PP16=$(ll 16 0); LL_PP512=$(ll 512 0); LL_TG=$(ll 0 64)
  /usr/bin/time -v -o "$WORK/llama-batched-$m.time" "$BIN/llama-batched-bench" -m "$f" -c 4096 \
    -npp 16 -ntg 32 -npl $BATCH -t $THREADS --output-format jsonl 2>/dev/null > "$WORK/llama-batched-$m.jsonl"
  LL_BATCH_RSS=$(awk '/Maximum resident/{print $6/1024}' "$WORK/llama-batched-$m.time")
  LL_BATCH=$(python3 -c "import json;r=[json.loads(l) for l in open('$WORK/llama-batched-$m.jsonl') if l.startswith('{')];print([x for x in r if x['pl']==$BATCH][0]['speed_tg'])")
  /usr/bin/time -v "$BIN/llama-completion" -m "$f" -t $THREADS -no-cnv -p "$PROMPT" -n 128 \
    --ignore-eos -s 1 --temp 0 --no-warmup > "$WORK/llama-greedy-$m.txt" 2>&1
  LL_RSS=$(awk '/Maximum resident/{print $6/1024}' "$WORK/llama-greedy-$m.txt")
  LL_LOAD=$(awk '/load time/{for(i=1;i<=NF;i++) if($i=="ms") {print $(i-1); exit}}' "$WORK/llama-greedy-$m.txt")

  echo "== $m: declab (examples/decode_speed: load, prefill, 32 single-stream tokens, batch of $BATCH)"
  # llama.cpp's measured load comes after two runs of its own on the file; one declab load first
  # warms declab's files (the GGUF and the caches beside it) likewise (on the AVX2 host, declab's
  # first load after llama.cpp's runs took 250-360 ms, the next ones 55-190)
  RAYON_NUM_THREADS=$THREADS DECLAB_MODELS=$MODELS target/release/examples/decode_speed "$m" load > /dev/null
  RAYON_NUM_THREADS=$THREADS DECLAB_MODELS=$MODELS /usr/bin/time -v \
    target/release/examples/decode_speed "$m" $BATCH > "$WORK/declab-$m.txt" 2>&1
  grep -E "^(load|prefill|single|batch)" "$WORK/declab-$m.txt"
  D=$WORK/declab-$m.txt
  DL_RSS=$(awk '/^memory after single stream/{print $9}' "$D")
  # decode_speed's peak up to the end of its batch (its ragged comparison runs after)
  DL_BATCH_RSS=$(awk -v b=$BATCH '$0 ~ "^memory after batch "b":" {print $9}' "$D")
  DL_LOAD=$(awk '/^load/{print $2}' "$D")
  DL_PP16=$(awk '/^prefill 16 tokens/{print 16/$4*1000}' "$D")
  DL_PP512=$(awk '/^prefill 512 tokens/{print 512/$4*1000}' "$D")
  DL_TG=$(awk '/^single/{print $4}' "$D")
  DL_BATCH=$(awk -v b=$BATCH '$1=="batch" && $2==b":" {print $5}' "$D")
  row "$m" "prefill 16 tokens (tok/s)" "$DL_PP16" "$LL_PP16" up
  row "$m" "prefill 512 tokens (tok/s)" "$DL_PP512" "$LL_PP512" up
  row "$m" "decode, single stream (tok/s)" "$DL_TG" "$LL_TG" up
  row "$m" "decode, batch of $BATCH (tok/s)" "$DL_BATCH" "$LL_BATCH" up
  row "$m" "model load (ms)" "$DL_LOAD" "$LL_LOAD" down
  row "$m" "peak RSS, single stream (MiB)" "$DL_RSS" "$LL_RSS" down
  row "$m" "peak RSS, batch of $BATCH (MiB)" "$DL_BATCH_RSS" "$LL_BATCH_RSS" down
done

echo "== sampler (Gemma's vocabulary, 262,144)"
sampling_ms() { awk '/sampling time/{for(i=1;i<=NF;i++) if($i=="ms") {print $(i-1)/128; exit}}' "$1"; }
LL_S_GREEDY=$(sampling_ms "$WORK/llama-greedy-gemma.txt")
"$BIN/llama-completion" -m "${FILE[gemma]}" -t $THREADS -no-cnv -p "$PROMPT" -n 128 --ignore-eos -s 1 \
  --no-warmup --samplers "typ_p;temperature" --typical 0.9 --temp 0.8 > "$WORK/llama-typical.txt" 2>&1
LL_S_TYP=$(sampling_ms "$WORK/llama-typical.txt")
"$BIN/llama-completion" -m "${FILE[gemma]}" -t $THREADS -no-cnv -p "$PROMPT" -n 128 --ignore-eos -s 1 \
  --no-warmup --mirostat 2 --mirostat-ent 5 --mirostat-lr 0.1 > "$WORK/llama-mirostat.txt" 2>&1
LL_S_MIRO=$(sampling_ms "$WORK/llama-mirostat.txt")
DECLAB_MODELS=$MODELS target/release/declab bench --vocab 262144 --tokens 0 --iters 60 \
  --batch-tokens 16 --out "$WORK/declab-bench" > "$WORK/declab-bench.txt"
dl_us() { awk -v k="$1" '$1==k {print $3; exit}' "$WORK/declab-bench.txt"; }
row gemma "sampler greedy (us/token)" "$(dl_us greedy)" "$(python3 -c "print($LL_S_GREEDY*1e3)")" down
row gemma "sampler typical 0.9 (us/token)" "$(dl_us 'typical_p(typ=0.9)')" "$(python3 -c "print($LL_S_TYP*1e3)")" down
row gemma "sampler mirostat v2 (us/token)" "$(dl_us 'mirostat(version=2)')" "$(python3 -c "print($LL_S_MIRO*1e3)")" down

python3 - "$ROWS" "$WORK/declab-bench/bench.json" "$WORK/bench-peer.txt" <<'PY'
import sys, json, datetime, math
rows = [l.rstrip('\n').split('\t') for l in open(sys.argv[1])]
bench = json.load(open(sys.argv[2]))
cpu = open('/proc/cpuinfo').read().split('model name')[1].split('\n')[0].split(':', 1)[1].strip()
def f(x):
    try: return float(x)
    except ValueError: return math.nan
out = [f"{datetime.date.today()}  {cpu}, 2 threads, llama.cpp 0.3.36 (vendored) on the same files",
       f"{'model':<9}{'measure':<34}{'declab':>11}{'llama.cpp':>11}{'declab/llama.cpp':>18}"]
for m, name, d, l, better in rows:
    d, l = f(d), f(l)
    out.append(f"{m:<9}{name:<34}{d:>11.1f}{l:>11.1f}{d / l:>17.3g}x")
out.append("(tok/s: higher is better; ms, MiB, us: lower is better. The batch row: llama-batched-bench's")
out.append(" decode speed at the same batch; declab's includes its greedy sampler on every row. llama.cpp's")
out.append(" sampler time is its whole common_sampler_sample per token; declab's is bench's median on a cold row.")
out.append(" Peak RSS, single stream: load, a short prompt and 128 (llama.cpp) or 32 (declab) greedy tokens;")
out.append(" batch: the whole llama-batched-bench run (its KV cache sized by -c 4096) against decode_speed up to the end of its batch.)")
b = bench.get("batched", [])
if b:
    out.append("")
    out.append(f"sampler share of the per-token time inside one batch of {b[0]['batch']} rows (Gemma, every strategy,")
    out.append(" `declab bench --batch-tokens 16`; forward amortised over the rows, sampler wall time per row):")
    for r in sorted(b, key=lambda r: r['share_pct']):
        out.append(f"  {r['strategy'][:60]:<60} {r['sampler_us_median']:>7.1f} us  {r['share_pct']:>5.2f} %")
text = "\n".join(out)
print("\n" + text)
open(sys.argv[3], "w").write(text + "\n")
PY

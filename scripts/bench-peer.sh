#!/usr/bin/env bash
# declab vs llama.cpp on the same Gemma 3 270M Q4_K_M file, same machine, 2 threads, as ratios.
# llama.cpp (CPU only) is built from the llama-cpp-python sdist on PyPI in a throwaway folder
# ($DECLAB_PEER_DIR, default /tmp/declab-peer) by scripts/build-llama-cpp.sh.
# Not part of CI (about 5 minutes on 2 cores for the build). Usage: make bench-peer
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${DECLAB_PEER_DIR:-/tmp/declab-peer}
MODELS=${DECLAB_MODELS:-models}
MODEL=$MODELS/gemma-3-270m/gemma-3-270m-q4_k_m.gguf
VERSION=0.3.36 # as in scripts/build-llama-cpp.sh
THREADS=2
PROMPT="Once upon a time, in a small village by the sea,"
BIN=$(DECLAB_PEER_DIR=$WORK scripts/build-llama-cpp.sh | tail -1)/bin
cargo build --release --example decode_speed -q

echo "== llama.cpp $VERSION (vendored), $THREADS threads"
"$BIN/llama-bench" -m "$MODEL" -p 14 -n 64 -t $THREADS -r 3 -o csv 2>/dev/null > "$WORK/llama-bench.csv"
LL_PP=$(python3 -c "import csv;r=[x for x in csv.DictReader(open('$WORK/llama-bench.csv')) if x['n_prompt']=='14'];print(float(r[0]['avg_ts']))")
LL_TG=$(python3 -c "import csv;r=[x for x in csv.DictReader(open('$WORK/llama-bench.csv')) if x['n_gen']=='64'];print(float(r[0]['avg_ts']))")
/usr/bin/time -v "$BIN/llama-completion" -m "$MODEL" -t $THREADS -no-cnv -p "$PROMPT" -n 128 \
  --ignore-eos -s 1 --temp 0 --no-warmup > "$WORK/llama-greedy.txt" 2>&1
LL_RSS=$(awk '/Maximum resident/{print $6/1024}' "$WORK/llama-greedy.txt")
LL_LOAD=$(awk '/load time/{for(i=1;i<=NF;i++) if($i=="ms") {print $(i-1); exit}}' "$WORK/llama-greedy.txt")
sampling_ms() { awk '/sampling time/{for(i=1;i<=NF;i++) if($i=="ms") {print $(i-1)/128; exit}}' "$1"; }
LL_S_GREEDY=$(sampling_ms "$WORK/llama-greedy.txt")
"$BIN/llama-completion" -m "$MODEL" -t $THREADS -no-cnv -p "$PROMPT" -n 128 --ignore-eos -s 1 \
  --no-warmup --samplers "typ_p;temperature" --typical 0.9 --temp 0.8 > "$WORK/llama-typical.txt" 2>&1
LL_S_TYP=$(sampling_ms "$WORK/llama-typical.txt")
"$BIN/llama-completion" -m "$MODEL" -t $THREADS -no-cnv -p "$PROMPT" -n 128 --ignore-eos -s 1 \
  --no-warmup --mirostat 2 --mirostat-ent 5 --mirostat-lr 0.1 > "$WORK/llama-mirostat.txt" 2>&1
LL_S_MIRO=$(sampling_ms "$WORK/llama-mirostat.txt")

echo "== declab (decode_speed: load, prefill, 32 single-stream tokens, batch of 27)"
RAYON_NUM_THREADS=$THREADS /usr/bin/time -v target/release/examples/decode_speed 27 \
  > "$WORK/declab.txt" 2>&1
cat "$WORK/declab.txt" | grep -E "^(load|prefill|single|batch)"
DL_RSS=$(awk '/Maximum resident/{print $6/1024}' "$WORK/declab.txt")
DL_LOAD=$(awk '/^load/{print $2}' "$WORK/declab.txt")
DL_PP=$(awk '/^prefill again/{print $3}' "$WORK/declab.txt")
DL_PP_TOK=$(awk '/^prefill [0-9]/{print $2}' "$WORK/declab.txt")
DL_TG=$(awk '/^single/{print $4}' "$WORK/declab.txt")
DL_BATCH=$(awk '/^batch +27/{print $5}' "$WORK/declab.txt")
target/release/declab bench --vocab 262144 --tokens 0 --iters 60 --out "$WORK/declab-bench" \
  > "$WORK/declab-bench.txt"
dl_us() { awk -v k="$1" '$1==k {print $3; exit}' "$WORK/declab-bench.txt"; }

python3 - "$LL_PP" "$LL_TG" "$LL_RSS" "$LL_LOAD" "$LL_S_GREEDY" "$LL_S_TYP" "$LL_S_MIRO" \
  "$DL_PP" "$DL_PP_TOK" "$DL_TG" "$DL_BATCH" "$DL_RSS" "$DL_LOAD" \
  "$(dl_us greedy)" "$(dl_us 'typical_p(typ=0.9)')" "$(dl_us 'mirostat(version=2)')" <<'PY'
import sys, datetime, platform
a = sys.argv[1:]
def f(x):
    try: return float(x)
    except ValueError: return float('nan')
ll_pp, ll_tg, ll_rss, ll_load, ll_g, ll_t, ll_m = map(f, a[:7])
dl_pp_ms, dl_pp_tok, dl_tg, dl_batch, dl_rss, dl_load, dl_g, dl_t, dl_m = map(f, a[7:])
ll_pp_ms = 14 / ll_pp * 1e3
cpu = open('/proc/cpuinfo').read().split('model name')[1].split('\n')[0].split(':', 1)[1].strip()
print(f"\n{datetime.date.today()}  {cpu}, 2 threads; llama.cpp prompt 14 tokens, declab {dl_pp_tok:.0f}")
print(f"{'measure':<34}{'declab':>12}{'llama.cpp':>12}{'declab/llama.cpp':>18}")
rows = [
 ("decode, single stream (tok/s)", dl_tg, ll_tg, dl_tg/ll_tg),
 ("decode, batch of 27 (tok/s, all)", dl_batch, ll_tg, dl_batch/ll_tg),
 ("prefill (ms)", dl_pp_ms, ll_pp_ms, dl_pp_ms/ll_pp_ms),
 ("model load (ms)", dl_load, ll_load, dl_load/ll_load),
 ("peak RSS (MiB)", dl_rss, ll_rss, dl_rss/ll_rss),
 ("sampler greedy (us/token)", dl_g, ll_g*1e3, dl_g/(ll_g*1e3)),
 ("sampler typical 0.9 (us/token)", dl_t, ll_t*1e3, dl_t/(ll_t*1e3)),
 ("sampler mirostat v2 (us/token)", dl_m, ll_m*1e3, dl_m/(ll_m*1e3)),
]
for n, d, l, r in rows:
    print(f"{n:<34}{d:>12.1f}{l:>12.1f}{r:>17.2f}x")
print("(tok/s: higher is better; ms, MiB, us: lower is better. llama.cpp's sampler time is its")
print(" whole common_sampler_sample per token, candidate array included; declab's is bench's median.)")
PY

